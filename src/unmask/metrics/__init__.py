"""unmask.metrics"""
