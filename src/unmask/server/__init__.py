"""unmask.server"""
