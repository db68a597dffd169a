"""pytorch-template's MnistModel exactly as that template ships it (model/model.py): `view` after the convolutions
and log-probabilities out. kiln must train it as written. Plus the output shapes other users' models have."""

import torch.nn as nn
import torch.nn.functional as F


class MnistModel(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 10, kernel_size=5)
        self.conv2 = nn.Conv2d(10, 20, kernel_size=5)
        self.conv2_drop = nn.Dropout2d()
        self.fc1 = nn.Linear(320, 50)
        self.fc2 = nn.Linear(50, num_classes)

    def forward(self, x):
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.conv2_drop(self.conv2(x)), 2))
        x = x.view(-1, 320)
        x = F.relu(self.fc1(x))
        x = F.dropout(x, training=self.training)
        x = self.fc2(x)
        return F.log_softmax(x, dim=1)


class TupleOut(MnistModel):
    """Returns (logits, features), as many research models do."""

    def forward(self, x):
        return super().forward(x), x.flatten(1)


class DictOut(MnistModel):
    """Returns {"logits": ...}, as Hugging Face models do."""

    def forward(self, x):
        return {"logits": super().forward(x), "hidden": None}


class StringOut(MnistModel):
    def forward(self, x):
        return "not a tensor"


def small_net(num_classes: int, hidden: int = 16) -> nn.Module:
    """A model factory function in the user's own code (accepted as model.name)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))


class MovesItself(MnistModel):
    """Puts its input on a GPU itself, as tutorials written for one machine do."""

    def forward(self, x):
        return super().forward(x.to("cuda" if x.device.type == "cpu" else "cpu"))


class NarrowResNet(nn.Module):
    """A narrow residual network of torchvision's BasicBlocks (16 and 32 channels): ResNet's structure, small."""

    def __init__(self, num_classes=10, in_channels=1, width=16):
        super().__init__()
        from torchvision.models.resnet import BasicBlock

        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                                  nn.ReLU(inplace=True))
        down = nn.Sequential(nn.Conv2d(width, 2 * width, 1, stride=2, bias=False), nn.BatchNorm2d(2 * width))
        self.blocks = nn.Sequential(BasicBlock(width, width), BasicBlock(width, 2 * width, stride=2, downsample=down))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, num_classes))

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)))
