"""unmask: explain NLP model predictions and audit whether the explanations can be trusted."""
from unmask.attribution import Attribution, explain, get_method
from unmask.audit import AuditReport, audit
from unmask.errors import UnmaskError
from unmask.models import TextClassifier, load_model

__all__ = ["Attribution", "AuditReport", "audit", "TextClassifier", "UnmaskError", "explain", "get_method", "load_model"]
__version__ = "0.1.0"
