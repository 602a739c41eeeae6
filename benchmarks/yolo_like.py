"""A YOLOv5n-class detector (backbone of Conv/C3/SPPF blocks, PAN neck, 3-scale detect head; ~1.9M
parameters), built from its layer recipe: what `torch.save(model)` of a small YOLOv5 writes, for the
checkpoint benchmark (benchmarks/bench_limits.py yolo). Nothing is downloaded."""
from __future__ import annotations

import torch
from torch import nn


class Conv(nn.Module):
    def __init__(self, c1, c2, k=1, s=1):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, 2 if k == 6 else k // 2, bias=False)  # YOLOv5: 6x6 stem, pad 2
        self.bn = nn.BatchNorm2d(c2)
        self.act = nn.SiLU()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    def __init__(self, c1, c2, shortcut=True):
        super().__init__()
        self.cv1, self.cv2 = Conv(c1, c2, 1), Conv(c2, c2, 3)
        self.add = shortcut and c1 == c2

    def forward(self, x):
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C3(nn.Module):
    def __init__(self, c1, c2, n=1, shortcut=True):
        super().__init__()
        c_ = c2 // 2
        self.cv1, self.cv2, self.cv3 = Conv(c1, c_), Conv(c1, c_), Conv(2 * c_, c2)
        self.m = nn.Sequential(*(Bottleneck(c_, c_, shortcut) for _ in range(n)))

    def forward(self, x):
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))


class SPPF(nn.Module):
    def __init__(self, c1, c2):
        super().__init__()
        self.cv1, self.cv2 = Conv(c1, c1 // 2), Conv(c1 * 2, c2)
        self.m = nn.MaxPool2d(5, 1, 2)

    def forward(self, x):
        x = self.cv1(x)
        y1 = self.m(x)
        y2 = self.m(y1)
        return self.cv2(torch.cat((x, y1, y2, self.m(y2)), 1))


class Detect(nn.Module):
    def __init__(self, nc=80, ch=(64, 128, 256), na=3):
        super().__init__()
        self.m = nn.ModuleList(nn.Conv2d(c, na * (nc + 5), 1) for c in ch)

    def forward(self, xs):
        return [m(x) for m, x in zip(self.m, xs)]


class YoloLike(nn.Module):
    def __init__(self, w=16, nc=80):
        super().__init__()
        self.b0, self.b1, self.b2 = Conv(3, w, 6, 2), Conv(w, 2 * w, 3, 2), C3(2 * w, 2 * w, 1)
        self.b3, self.b4 = Conv(2 * w, 4 * w, 3, 2), C3(4 * w, 4 * w, 2)
        self.b5, self.b6 = Conv(4 * w, 8 * w, 3, 2), C3(8 * w, 8 * w, 3)
        self.b7, self.b8, self.b9 = Conv(8 * w, 16 * w, 3, 2), C3(16 * w, 16 * w, 1), SPPF(16 * w, 16 * w)
        self.h10, self.h13 = Conv(16 * w, 8 * w), C3(16 * w, 8 * w, 1, False)
        self.h14, self.h17 = Conv(8 * w, 4 * w), C3(8 * w, 4 * w, 1, False)
        self.h18, self.h20 = Conv(4 * w, 4 * w, 3, 2), C3(8 * w, 8 * w, 1, False)
        self.h21, self.h23 = Conv(8 * w, 8 * w, 3, 2), C3(16 * w, 16 * w, 1, False)
        self.up = nn.Upsample(scale_factor=2)
        self.detect = Detect(nc, (4 * w, 8 * w, 16 * w))

    def forward(self, x):
        p3 = self.b4(self.b3(self.b2(self.b1(self.b0(x)))))
        p4 = self.b6(self.b5(p3))
        p5 = self.b9(self.b8(self.b7(p4)))
        h10 = self.h10(p5)
        h13 = self.h13(torch.cat((self.up(h10), p4), 1))
        h14 = self.h14(h13)
        out3 = self.h17(torch.cat((self.up(h14), p3), 1))
        out4 = self.h20(torch.cat((self.h18(out3), h14), 1))
        out5 = self.h23(torch.cat((self.h21(out4), h10), 1))
        return self.detect([out3, out4, out5])


def build() -> YoloLike:
    return YoloLike()
