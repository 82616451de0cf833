"""Threads sharing one model get the same results; repeated calls do not grow memory."""

import threading

import numpy as np

from conftest import IMAGES


def test_four_threads_on_one_model_agree(model):
    paths = [IMAGES / n for n in ["ihc.jpg", "gray.png", "rgb_photo.png", "retina.bmp"]]
    texts = ["chest X-ray", "brain MRI", "histology slide"]
    expected_images = model.encode_images(paths)
    expected_texts = model.encode_texts(texts)
    failures = []

    def work():
        try:
            for _ in range(5):
                assert np.abs(model.encode_images(paths) - expected_images).max() <= 1e-6
                assert np.abs(model.encode_texts(texts) - expected_texts).max() <= 1e-6
        except Exception as e:  # reported below, with the thread's error
            failures.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures


def rss_kb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def test_no_memory_growth_over_1000_calls(model):
    image = (IMAGES / "gray.png").read_bytes()
    for _ in range(50):  # warm up allocators and caches
        model.encode_images([image])
        model.encode_texts(["chest X-ray"])
    before = rss_kb()
    for _ in range(1000):
        model.encode_images([image])
        model.encode_texts(["chest X-ray"])
    grown = rss_kb() - before
    # A leak of one embedding per call would be 1000 * 2 * 128 B; of one image, 1000 * 600 KB.
    assert grown < 8 * 1024, f"RSS grew by {grown} kB over 1,000 calls"
