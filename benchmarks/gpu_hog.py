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
