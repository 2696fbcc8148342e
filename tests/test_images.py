"""Image reading: formats, bit depths, channels, EXIF orientation, resizing, bad files."""
from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from matchlab.images import (ImageError, list_images, read_image, rescale_points, resize_image,
                             target_size, to_tensor)


@pytest.fixture(scope="module")
def graf(datasets_root):
    return datasets_root / "oxford_graf" / "img1.png"


def test_png_rgb_and_gray(graf):
    rgb = read_image(graf)
    gray = read_image(graf, grayscale=True)
    assert rgb.shape == (3, 640, 800) and gray.shape == (1, 640, 800)
    assert rgb.dtype == torch.float32 and 0 <= rgb.min() and rgb.max() <= 1
    bgr = cv2.imread(str(graf))
    assert np.allclose(rgb[0].numpy() * 255, bgr[..., 2], atol=0.5)  # RGB order, not BGR


def test_16bit_png_keeps_precision(tmp_path):
    values = (np.arange(40 * 50) * 31).astype(np.uint16).reshape(40, 50)  # 2000 distinct levels
    path = tmp_path / "sixteen.png"
    cv2.imwrite(str(path), values)
    image = read_image(path, grayscale=True)
    assert np.allclose(image[0].numpy() * 65535, values, atol=0.5)
    # a value between two 8-bit steps survives: the file is not squashed to 8 bits
    assert len(np.unique(np.round(image.numpy() * 65535))) > 256


def test_rgba_drops_alpha(tmp_path, graf):
    rgb = cv2.imread(str(graf))
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)])
    path = tmp_path / "rgba.png"
    cv2.imwrite(str(path), rgba)
    assert torch.equal(read_image(path), read_image(graf))


def test_exif_orientation_applied(tmp_path):
    array = np.zeros((30, 60, 3), np.uint8)
    array[:, :20] = 255  # bright band on the left of the stored pixels
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = tmp_path / "rotated.jpg"
    Image.fromarray(array).save(path, exif=exif.tobytes(), quality=95)
    image = read_image(path, grayscale=True)[0]
    assert image.shape == (60, 30)  # displayed upright: portrait
    assert image[:20].mean() > 0.9 and image[25:].mean() < 0.1  # left band is now on top


def test_tiff(tmp_path, graf):
    path = tmp_path / "graf.tif"
    cv2.imwrite(str(path), cv2.imread(str(graf)))
    assert torch.equal(read_image(path), read_image(graf))


@pytest.mark.parametrize("damage", ["truncated_jpeg", "truncated_png", "empty", "garbage", "missing"])
def test_bad_files_raise_image_error(tmp_path, datasets_root, damage):
    jpeg = (datasets_root / "lightglue_assets" / "DSC_0410.JPG").read_bytes()
    png = (datasets_root / "oxford_graf" / "img1.png").read_bytes()
    content = {"truncated_jpeg": jpeg[: len(jpeg) // 2], "truncated_png": png[: len(png) // 2],
               "empty": b"", "garbage": b"not an image at all" * 10}
    path = tmp_path / f"bad_{damage}.jpg"
    if damage != "missing":
        path.write_bytes(content[damage])
    with pytest.raises(ImageError) as info:
        read_image(path)
    assert str(path) in str(info.value)


def test_resize_long_side_and_point_mapping():
    assert target_size((800, 640), 400) == (400, 320)
    assert target_size((800, 640), 1600) == (800, 640)  # no upscaling by default
    assert target_size((800, 640), (640, 480)) == (640, 480)
    # a bright pixel at (x, y) = (10, 6) in a 4x downscaled image maps to x = 41.5 ... in the original
    up = rescale_points(torch.tensor([[10.0, 6.0]]), (4.0, 4.0))
    assert torch.allclose(up, torch.tensor([[41.5, 25.5]]))
    # the centre of a 4x4 block [40..43] is 41.5: check with real resampling
    image = torch.zeros(1, 64, 64)
    image[:, 24:28, 40:44] = 1
    small = resize_image(image, (16, 16))
    y, x = divmod(int(small[0].argmax()), 16)
    assert torch.allclose(rescale_points(torch.tensor([[float(x), float(y)]]), (4.0, 4.0)),
                          torch.tensor([[41.5, 25.5]]))


def test_resize_is_antialiased():
    stripes = torch.zeros(1, 64, 64)
    stripes[:, :, ::2] = 1  # highest frequency: must average out, not alias
    small = resize_image(stripes, (16, 16))
    assert torch.allclose(small, torch.full_like(small, 0.5), atol=0.05)


def test_to_tensor_inputs(graf):
    array = cv2.cvtColor(cv2.imread(str(graf)), cv2.COLOR_BGR2RGB)
    from_array = to_tensor(array, grayscale=False)
    assert torch.allclose(from_array, read_image(graf))
    assert to_tensor(from_array, grayscale=True).shape == (1, 640, 800)
    with pytest.raises(ImageError):
        to_tensor(torch.zeros(5, 10, 10), grayscale=True)


def test_list_images_nested(tmp_path, graf):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ["x.png", "a/y.JPG", "a/b/z.tif", "a/notes.txt"]:
        (tmp_path / name).write_bytes(b"")
    assert list_images(tmp_path) == ["a/b/z.tif", "a/y.JPG", "x.png"]
    with pytest.raises(FileNotFoundError):
        list_images(tmp_path / "nope")


# ----------------------------------------------------------------------------- pixel limit

def png_of_zeros(path, width: int, height: int, rows: int | None = None) -> None:
    """A real 8-bit gray PNG of `width` x `height` zeros; with `rows`, only that many rows of
    pixel data follow the header (a header claiming more than the file holds)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + \
            struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    # zlib stream of n zeros (each row: filter byte 0, then the pixels), built from one
    # compressed block repeated (a full flush makes each block independent of the others)
    n = (width + 1) * (height if rows is None else rows)
    block = 1 << 22
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    piece = packer.compress(bytes(block)) + packer.flush(zlib.Z_FULL_FLUSH)
    tail = packer.compress(bytes(n % block)) + packer.flush()
    adler = (n % 65521) << 16 | 1  # Adler-32 of n zero bytes
    data = b"\x78\xda" + piece * (n // block) + tail + struct.pack(">I", adler)
    path.write_bytes(b"\x89PNG\r\n\x1a\n"
                     + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", data) + chunk(b"IEND", b""))


def test_header_sizes_of_real_files(tmp_path, datasets_root, graf):
    from matchlab.images import image_size

    for path in (graf, datasets_root / "lightglue_assets" / "DSC_0410.JPG"):
        with Image.open(path) as im:
            assert image_size(path) == im.size
    png_of_zeros(tmp_path / "small.png", 37, 21)
    assert image_size(tmp_path / "small.png") == (37, 21)
    assert read_image(tmp_path / "small.png").shape == (3, 21, 37)
    (tmp_path / "junk.jpg").write_bytes(b"\xff\xd8\xff\xe0\x00")  # cut inside a segment
    assert image_size(tmp_path / "junk.jpg") is None


def test_images_over_the_pixel_limit_are_refused_before_decoding(tmp_path, graf, monkeypatch):
    forged = tmp_path / "forged.png"  # 100000 x 100000 claimed, one row of data
    png_of_zeros(forged, 100_000, 100_000, rows=1)
    big = tmp_path / "big.png"  # a real 30000 x 30000 PNG: under 1 MB, 900 MP
    png_of_zeros(big, 30_000, 30_000)
    assert big.stat().st_size < 1_000_000
    for path, size in ((forged, "100000 x 100000"), (big, "30000 x 30000")):
        with pytest.raises(ImageError) as info:
            read_image(path)
        assert str(path) in str(info.value) and size in str(info.value)
        assert "limit of 160 million" in str(info.value)
    # configurable: per call, or for a whole run with the environment variable
    with pytest.raises(ImageError, match="800 x 640"):
        read_image(graf, max_pixels=500_000)
    assert read_image(graf, max_pixels=800 * 640).shape == (3, 640, 800)
    monkeypatch.setenv("MATCHLAB_MAX_PIXELS", "500000")
    with pytest.raises(ImageError, match="limit of 0.5 million"):
        read_image(graf)


def test_a_run_skips_images_over_the_limit_and_goes_on(tmp_path, graf):
    from matchlab.pipeline import extract_features
    from matchlab.registry import load_extractor
    from matchlab.store import FeatureStore

    images = tmp_path / "images"
    images.mkdir()
    png_of_zeros(images / "a_forged.png", 100_000, 100_000, rows=1)
    png_of_zeros(images / "b_big.png", 30_000, 30_000)
    (images / "c_graf.png").write_bytes(graf.read_bytes())
    names = list_images(images)
    report = extract_features(images, names, tmp_path / "features.h5",
                              load_extractor("sift", max_keypoints=256), progress=False)
    assert report.done == 1 and sorted(report.failed) == ["a_forged.png", "b_big.png"]
    assert "100000 x 100000" in report.failed["a_forged.png"]
    with FeatureStore(tmp_path / "features.h5", "r") as store:
        assert store.names() == ["c_graf.png"]
