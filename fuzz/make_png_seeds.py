#!/usr/bin/env python3
"""Writes a few small PNG files into fuzz/seeds-png/ as starting points for fuzz_png: every
colour type and bit depth, interlaced, text chunks (tEXt, zTXt, iTXt) before and after the image
data, a claimed-huge header, a zTXt chunk that inflates far beyond its size."""
import os, struct, zlib

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds-png")


def chunk(t, data):
    return struct.pack(">I", len(data)) + t + data + struct.pack(">I", zlib.crc32(t + data) & 0xFFFFFFFF)


def png(w, h, depth, ctype, rows, interlace=0, pre=b"", post=b"", plte=None):
    ihdr = struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, interlace)
    body = chunk(b"IHDR", ihdr) + pre
    if plte is not None:
        body += chunk(b"PLTE", plte)
    body += chunk(b"IDAT", zlib.compress(rows, 9)) + post + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


def raw(w, h, bpp_bits, fill=lambda x, y: 0):
    rowlen = (w * bpp_bits + 7) // 8
    return b"".join(b"\x00" + bytes(fill(i, y) & 255 for i in range(rowlen)) for y in range(h))


SEEDS = {
    "rgb32": png(32, 32, 8, 2, raw(32, 32, 24, lambda i, y: 128 if (i // 3) < 8 else 200),
                 pre=chunk(b"tEXt", b"prompt\x00a photo of a red square")),
    "gray1_4x4": png(4, 4, 1, 0, raw(4, 4, 1, lambda i, y: 0xA0)),
    "gray16": png(8, 8, 16, 0, raw(8, 8, 16, lambda i, y: i * 7 + y)),
    "palette": png(8, 8, 4, 3, raw(8, 8, 4, lambda i, y: 0x12), plte=bytes([255, 0, 0, 0, 255, 0, 0, 0, 255])),
    "rgba_interlaced": png(9, 7, 8, 6, raw(9, 7, 32, lambda i, y: i + y), interlace=1),
    "gray_alpha": png(5, 3, 8, 4, raw(5, 3, 16, lambda i, y: i)),
    "text_after": png(2, 2, 8, 2, raw(2, 2, 24),
                      post=chunk(b"zTXt", b"condition\x00\x00" + zlib.compress(b'{"name":"A1"}'))
                      + chunk(b"iTXt", b"prompt\x00\x00\x00en\x00prompt\x00hello")),
    "huge_header": b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 65535, 65535, 8, 2, 0, 0, 0))
                   + chunk(b"IDAT", zlib.compress(b"\x00" * 4096, 9)) + chunk(b"IEND", b""),
    "ztxt_bomb": png(1, 1, 8, 2, raw(1, 1, 24),
                     pre=chunk(b"zTXt", b"prompt\x00\x00" + zlib.compress(b"A" * (4 << 20), 9))),
}

if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    for name, data in SEEDS.items():
        with open(os.path.join(OUT, name + ".png"), "wb") as f:
            f.write(data)
