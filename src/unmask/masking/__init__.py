"""unmask.masking"""
