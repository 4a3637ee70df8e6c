"""nst_pl: neural style transfer with PyTorch Lightning."""
