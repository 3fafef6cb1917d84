"""Audit: can a model's explanations be trusted? Behavioral evidence first, structural second."""
