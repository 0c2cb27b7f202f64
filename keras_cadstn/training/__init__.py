"""Training: Algorithm 1's stages with checkpoints and resume, multi-worker training, the centre refiner's
and the hand detector's training, and evaluation of trained networks on a split."""
