"""unmask.facade"""
