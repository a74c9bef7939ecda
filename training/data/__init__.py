"""Dataset loaders (EEG-ImageNet, Things-EEG2, fMRI voxels, unlabelled EEG) and the synthetic twin."""
