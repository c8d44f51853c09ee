"""stackae: greedy layer-wise autoencoder pretraining, compared honestly with random init."""
__version__ = "0.1.0"
