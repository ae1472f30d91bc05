"""The network of spec §1 written out by hand with torch.nn.functional: an
independent reference for the model and its §3 variants (it reads neither
ARCH nor ModelConfig)."""
import numpy as np
import torch
from torch.nn import functional as F

TORCHVISION_MEAN, TORCHVISION_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@torch.no_grad()
def reference_logits(sd, x, columns=2, lrn=True, pool=3, dropout=0.5):
    """Eval-mode logits of the canonical state dict `sd` for (N, 3, 224, 224) crops `x`."""
    def norm(a):          # LRN within each column's maps (spec §1); torch's alpha/n convention
        if not lrn:
            return a
        op = torch.nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)
        return torch.cat([op(h) for h in a.chunk(columns, 1)], 1)

    def conv(a, name, **kw):
        return F.relu(F.conv2d(a, sd[f"{name}.weight"], sd[f"{name}.bias"], **kw))

    def fc(a, name):       # paper dropout at test time: every output, times (1 - p)
        return F.relu(F.linear(a, sd[f"{name}.weight"], sd[f"{name}.bias"])) * (1 - dropout)

    x = F.pad(x, (0, 3, 0, 3))                 # 224 -> 227: conv1 gives 55x55 (spec §1)
    x = F.max_pool2d(norm(conv(x, "conv1", stride=4)), pool, 2)
    x = F.max_pool2d(norm(conv(x, "conv2", padding=2, groups=columns)), pool, 2)
    x = conv(x, "conv3", padding=1)            # reads both columns
    x = conv(x, "conv4", padding=1, groups=columns)
    x = F.max_pool2d(conv(x, "conv5", padding=1, groups=columns), pool, 2)
    x = fc(fc(x.flatten(1), "fc6"), "fc7")
    return F.linear(x, sd["fc8.weight"], sd["fc8.bias"])


def centre_crop(image, mean_image=None, input_scale="raw"):
    """The 224 centre crop of a 256x256x3 uint8 image as a (1, 3, 224, 224) tensor:
    raw minus the mean image (spec §2), or torchvision's ToTensor + Normalize."""
    patch = np.asarray(image)[16:240, 16:240]
    if input_scale == "unit":
        import torchvision.transforms.functional as TF
        return TF.normalize(TF.to_tensor(patch.copy()), TORCHVISION_MEAN, TORCHVISION_STD)[None]
    x = patch.astype(np.float64) - np.asarray(mean_image, np.float64)[16:240, 16:240]
    return torch.from_numpy(x.transpose(2, 0, 1).astype(np.float32))[None]
