"""unmask.perturbation"""
