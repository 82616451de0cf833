"""A small labelled dataset and the metrics LAION's CLIP_benchmark computes on it.

Builds crates/biomedclip/tests/fixtures/dataset from real images that ship with scikit-image
and pydicom (6 classes x 6 images: CT and MR crops kept as DICOM, immunohistochemistry,
fundus, microscopy and photographs), with:
  images/<class>/...      a folder of class folders (zero-shot)
  classes.json            folder name -> class name used in the prompts
  templates.txt           prompt templates with {c}
  train.csv val.csv test.csv   path,label splits (linear probe)
  retrieval.csv           image,caption pairs, two captions per image
Then encodes it with the open_clip reference (the tiny fixture checkpoint) and writes
golden/eval.json: CLIP_benchmark 1.6's zero-shot and retrieval metrics (its own functions),
per-class recall and confusion matrix (scikit-learn), and the linear probe computed with
scikit-learn's LogisticRegression over the same C grid and splits as the Rust probe.

    python tools/reference/make_eval_fixtures.py   (after make_fixtures.py)
"""

import csv
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pydicom
import torch
from PIL import Image
from pydicom.data import get_testdata_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_fixtures as mf  # noqa: E402
from make_dicom_fixtures import render as render_dicom  # noqa: E402

DATA = mf.FIXTURES / "dataset"
CLASSES = {
    "ct": "CT scan",
    "histology": "immunohistochemistry histopathology",
    "microscopy": "fluorescence microscopy",
    "mri": "brain MRI",
    "photograph": "natural photograph",
    "retina": "retinal fundus photograph",
}
TEMPLATES = ["this is a photo of {c}", "a {c} image"]
PER_CLASS = 6
C_GRID = [10 ** (-2 + 0.5 * i) for i in range(17)]


def crops(arr, size, count, seed):
    rng = np.random.default_rng(seed)
    h, w = arr.shape[:2]
    for _ in range(count):
        y, x = rng.integers(0, h - size + 1), rng.integers(0, w - size + 1)
        yield arr[y:y + size, x:x + size]


def dicom_crops(source, out_dir, size, seed):
    ds = pydicom.dcmread(get_testdata_file(source))
    arr = ds.pixel_array
    for i, c in enumerate(crops(arr, size, PER_CLASS, seed)):
        d = ds.copy()
        d.Rows, d.Columns = c.shape
        d.PixelData = np.ascontiguousarray(c).tobytes()
        d.save_as(out_dir / f"{i}.dcm")


def build_dataset():
    from skimage import data

    if DATA.exists():
        shutil.rmtree(DATA)
    img = DATA / "images"
    for name in CLASSES:
        (img / name).mkdir(parents=True)
    dicom_crops("CT_small.dcm", img / "ct", 96, 1)
    dicom_crops("MR_small.dcm", img / "mri", 48, 2)
    for i, c in enumerate(crops(data.immunohistochemistry(), 160, PER_CLASS, 3)):
        Image.fromarray(c).resize((112, 112), Image.BICUBIC).save(img / "histology" / f"{i}.jpg", quality=90)
    retina = np.asarray(Image.fromarray(data.retina()).resize((400, 400), Image.BICUBIC))
    for i, c in enumerate(crops(retina, 200, PER_CLASS, 4)):
        Image.fromarray(c).resize((112, 112), Image.BICUBIC).save(img / "retina" / f"{i}.jpg", quality=90)
    for i, c in enumerate(crops(data.cell(), 200, PER_CLASS, 5)):
        Image.fromarray(c).resize((100, 100), Image.BICUBIC).save(img / "microscopy" / f"{i}.png")
    photos = [data.coffee(), data.chelsea(), data.astronaut(), data.coffee(), data.chelsea(), data.astronaut()]
    for i, p in enumerate(photos):
        c = next(crops(p, 250, 1, 10 + i))
        Image.fromarray(c).resize((120, 120), Image.BICUBIC).save(img / "photograph" / f"{i}.jpg", quality=90)
    (DATA / "notes.txt").write_text("not an image: the eval folder walker must skip and count it\n")
    shutil.copy(DATA / "notes.txt", img / "photograph" / "notes.txt")
    (DATA / "classes.json").write_text(json.dumps(CLASSES, indent=1) + "\n")
    (DATA / "templates.txt").write_text("\n".join(TEMPLATES) + "\n")

    files = {name: sorted(p.name for p in (img / name).iterdir() if p.name != "notes.txt")
             for name in CLASSES}
    split = {"train": range(0, 3), "val": range(3, 4), "test": range(4, 6)}
    for s, idx in split.items():
        with open(DATA / f"{s}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "label"])
            for name in CLASSES:
                for i in idx:
                    w.writerow([f"images/{name}/{files[name][i]}", name])
    with open(DATA / "retrieval.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "caption"])
        for name, cname in CLASSES.items():
            for i, file in enumerate(files[name]):
                w.writerow([f"images/{name}/{file}", f"{cname}, sample {i}"])
                w.writerow([f"images/{name}/{file}", f"a {cname} from the archive"])
    return files


def load_image(path):
    if path.suffix == ".dcm":
        pixels, mode = render_dicom(path)
        return Image.fromarray(pixels, mode)
    return Image.open(path)


def reference_model():
    """The tiny fixture checkpoint in open_clip, as make_fixtures.py built it."""
    import open_clip

    src = mf.FIXTURES / "tiny-model"
    tmp = Path(tempfile.mkdtemp()) / "tiny-model"
    shutil.copytree(src, tmp)
    cfg = json.loads((src / "open_clip_config.json").read_text())
    bert = json.loads((src / "config.json").read_text())
    tiny = {"vision_width": 64, "vision_depth": 2, "mlp_ratio": 2.0}
    model = mf.build_model(tmp, cfg, bert, tiny)
    sd = torch.load(src / "open_clip_pytorch_model.bin", map_location="cpu")
    sd.pop("text.transformer.embeddings.position_ids", None)
    model.load_state_dict(sd, strict=False)
    model.eval()
    _, _, preprocess = open_clip.create_model_and_transforms(
        "biomedclip-fixture-tiny-model", pretrained=None, pretrained_hf=False,
        image_mean=mf.MEAN, image_std=mf.STD)
    tokenizer = open_clip.tokenizer.HFTokenizer(str(tmp), context_length=256)
    # Sanity: the rebuilt model gives the committed goldens.
    golden = json.loads((mf.FIXTURES / "golden" / "golden.json").read_text())
    with torch.no_grad():
        e = model.encode_text(tokenizer([golden["texts"][0]["text"]]), normalize=True)[0]
    assert torch.allclose(e, torch.tensor(golden["texts"][0]["embedding"]), atol=1e-6)
    return model, preprocess, tokenizer


class Labelled(torch.utils.data.Dataset):
    def __init__(self, rows, classes, preprocess):
        self.rows, self.classes, self.preprocess = rows, classes, preprocess

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        path, label = self.rows[i]
        return self.preprocess(load_image(DATA / path)), label


class Pairs(torch.utils.data.Dataset):
    def __init__(self, items, preprocess):
        self.items, self.preprocess = items, preprocess

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        path, captions = self.items[i]
        return self.preprocess(load_image(DATA / path)), captions


def read_csv(name):
    with open(DATA / name) as f:
        return list(csv.DictReader(f))


def main():
    from clip_benchmark.metrics import zeroshot_classification as zsc
    from clip_benchmark.metrics import zeroshot_retrieval as zsr
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score, confusion_matrix, recall_score

    # clip_benchmark 1.6.2's accuracy() calls float() on a 1-element array, which NumPy 2
    # rejects; the same top-k count, returning a Python float.
    def accuracy(output, target, topk=(1,)):
        pred = output.topk(max(topk), 1, True, True)[1].t()
        correct = pred.eq(target.view(1, -1).expand_as(pred))
        return [correct[:k].reshape(-1).float().sum().item() / len(target) for k in topk]

    zsc.accuracy = accuracy
    torch.set_num_threads(2)
    files = build_dataset()
    model, preprocess, tokenizer = reference_model()
    labels = sorted(CLASSES)  # folder order = class index
    names = [CLASSES[k] for k in labels]
    rows = [(f"images/{k}/{f}", labels.index(k)) for k in labels for f in files[k]]
    out = {}

    # Zero-shot, through CLIP_benchmark's own evaluate().
    ds = Labelled(rows, names, preprocess)
    loader = torch.utils.data.DataLoader(ds, batch_size=8)
    zs = zsc.evaluate(model, loader, tokenizer, names, TEMPLATES, "cpu", amp=False)
    classifier = zsc.zero_shot_classifier(model, tokenizer, names, TEMPLATES, "cpu", amp=False)
    logits, target = zsc.run_classification(model, classifier, loader, "cpu", amp=False)
    pred = logits.argmax(dim=1).numpy()
    target = target.numpy()
    out["zero_shot"] = {
        "top1": zs["acc1"], "top5": zs["acc5"], "balanced_accuracy": zs["mean_per_class_recall"],
        "per_class_recall": recall_score(target, pred, average=None, labels=range(len(names)),
                                         zero_division=0).tolist(),
        "confusion": confusion_matrix(target, pred, labels=range(len(names))).tolist(),
        "classes": names,
    }

    # Retrieval, through CLIP_benchmark's evaluate().
    by_image = {}
    for r in read_csv("retrieval.csv"):
        by_image.setdefault(r["image"], []).append(r["caption"])
    pairs = Pairs(list(by_image.items()), preprocess)
    ploader = torch.utils.data.DataLoader(
        pairs, batch_size=8, collate_fn=lambda b: (torch.stack([x for x, _ in b]), [c for _, c in b]))
    rt = zsr.evaluate(model, ploader, tokenizer, "cpu", amp=False, recall_k_list=[1, 5, 10])
    out["retrieval"] = {
        "image_to_text": {f"R@{k}": rt[f"text_retrieval_recall@{k}"] for k in (1, 5, 10)},
        "text_to_image": {f"R@{k}": rt[f"image_retrieval_recall@{k}"] for k in (1, 5, 10)},
    }

    # Linear probe: scikit-learn on the reference's embeddings, same splits and C grid.
    def embed(name):
        split = read_csv(name)
        x = torch.stack([preprocess(load_image(DATA / r["path"])) for r in split])
        with torch.no_grad():
            e = model.encode_image(x, normalize=True).numpy().astype(np.float64)
        return e, np.array([labels.index(r["label"]) for r in split])

    (xt, yt), (xv, yv), (xs, ys) = embed("train.csv"), embed("val.csv"), embed("test.csv")

    def fit(x, y, c):
        return LogisticRegression(C=c, max_iter=100000, tol=1e-12).fit(x, y)

    val_acc = [float((fit(xt, yt, c).predict(xv) == yv).mean()) for c in C_GRID]
    best = C_GRID[int(np.argmax(val_acc))]
    clf = fit(np.vstack([xt, xv]), np.concatenate([yt, yv]), best)
    pred = clf.predict(xs)
    out["linear_probe"] = {
        "validation": [{"C": c, "accuracy": a} for c, a in zip(C_GRID, val_acc)],
        "C": best,
        "top1": float((pred == ys).mean()),
        "balanced_accuracy": float(balanced_accuracy_score(ys, pred)),
    }
    from importlib.metadata import version
    out["versions"] = {"clip_benchmark": version("clip_benchmark"), "scikit-learn": version("scikit-learn")}
    (mf.FIXTURES / "golden" / "eval.json").write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
