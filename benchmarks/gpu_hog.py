"""A model that asks for more GPU memory than the device has: the GPU check's out-of-memory run
(`model.name=gpu_hog:MemoryHog`) must end with kiln's out-of-memory message, not a traceback."""

import torch
from torch import nn


class MemoryHog(nn.Module):
    def __init__(self, in_channels: int = 1, image_size=(28, 28), num_classes: int = 10):
        super().__init__()
        self.fc = nn.Linear(in_channels * image_size[0] * image_size[1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_cuda:  # twice the device's memory: cannot fit
            total = torch.cuda.get_device_properties(x.device).total_memory
            hog = torch.empty(2 * total, dtype=torch.uint8, device=x.device)
            x = x + hog[:1].float()
        return self.fc(x.flatten(1))


class SyncsEveryStep(nn.Module):
    """A model that reads a value back from the GPU in its forward (a `.item()`, as a debugging print does): the
    GPU check's profile must name the host syncs as the bottleneck."""

    def __init__(self, in_channels: int = 1, image_size=(28, 28), num_classes: int = 10):
        super().__init__()
        self.fc = nn.Linear(in_channels * image_size[0] * image_size[1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.fc(x.flatten(1))
        if out.abs().max().item() > 1e6:  # a host sync on every call
            print("large activations")
        return out
