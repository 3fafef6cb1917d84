"""unmask.influence"""
