"""The ImageNet normalisation statistics that ImageNet-pretrained backbones expect."""

#: Per-channel RGB mean of ImageNet, for inputs scaled to [0, 1].
IMAGENET_MEAN = (0.485, 0.456, 0.406)
#: Per-channel RGB standard deviation of ImageNet, for inputs scaled to [0, 1].
IMAGENET_STD = (0.229, 0.224, 0.225)
