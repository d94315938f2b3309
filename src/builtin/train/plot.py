"""A dependency-free line plot (Pillow only; matplotlib is not installed here)."""

import math

from PIL import Image, ImageDraw

PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]


def smooth(ys, k):
    out, acc = [], []
    for y in ys:
        acc.append(y)
        if len(acc) > k:
            acc.pop(0)
        out.append(sum(acc) / len(acc))
    return out


def line_plot(series, path, title="", xlabel="", ylabel="", logy=True, size=(900, 520)):
    """series: list of (label, xs, ys). Writes a PNG."""
    W, H = size
    L, R, T, B = 80, 20, 40, 50
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    pts = [(x, y) for _, xs, ys in series for x, y in zip(xs, ys) if y is not None and (y > 0 or not logy)]
    if not pts:
        img.save(path)
        return
    f = (lambda v: math.log10(v)) if logy else (lambda v: v)
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y0, y1 = min(f(p[1]) for p in pts), max(f(p[1]) for p in pts)
    if x1 == x0:
        x1 = x0 + 1
    if y1 == y0:
        y1 = y0 + 1
    pad = 0.05 * (y1 - y0)
    y0, y1 = y0 - pad, y1 + pad

    def X(v):
        return L + (v - x0) / (x1 - x0) * (W - L - R)

    def Y(v):
        return T + (1 - (f(v) - y0) / (y1 - y0)) * (H - T - B)

    d.rectangle([L, T, W - R, H - B], outline="black")
    for k in range(6):
        yv = y0 + (y1 - y0) * k / 5
        yy = T + (1 - k / 5) * (H - T - B)
        d.line([L - 4, yy, L, yy], fill="black")
        lab = f"{10 ** yv:.3g}" if logy else f"{yv:.3g}"
        d.text((4, yy - 6), lab, fill="black")
        xv = x0 + (x1 - x0) * k / 5
        xx = L + k / 5 * (W - L - R)
        d.line([xx, H - B, xx, H - B + 4], fill="black")
        d.text((xx - 15, H - B + 8), f"{xv:.4g}", fill="black")
    for i, (label, xs, ys) in enumerate(series):
        c = PALETTE[i % len(PALETTE)]
        line = [(X(x), Y(y)) for x, y in zip(xs, ys) if y is not None and (y > 0 or not logy)]
        if len(line) > 1:
            d.line(line, fill=c, width=2)
        d.text((L + 10, T + 8 + 14 * i), label, fill=c)
    d.text((L, 12), title, fill="black")
    d.text((W // 2 - 40, H - 20), xlabel, fill="black")
    d.text((4, T - 20), ylabel, fill="black")
    img.save(path)
