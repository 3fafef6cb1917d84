"""Training loops (fine-tuning with checkpoints and resume) shared by train / facade / diffmask."""
from unmask.training.finetune import TrainConfig, cross_entropy_loss, evaluate, train_classifier

__all__ = ["TrainConfig", "cross_entropy_loss", "evaluate", "train_classifier"]
