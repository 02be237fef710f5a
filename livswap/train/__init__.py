"""``livswap train``: your own swap generator, trained on your photos and videos."""

from livswap.train.trainer import StepLosses, Trainer, TrainSettings, estimate_text, plot_losses

__all__ = ["StepLosses", "TrainSettings", "Trainer", "estimate_text", "plot_losses"]
