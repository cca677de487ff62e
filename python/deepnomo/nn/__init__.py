"""Networks for survival deep learning: backbones, multiple-instance pooling, heads."""
