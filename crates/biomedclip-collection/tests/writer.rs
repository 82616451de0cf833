//! `FolderWriter`: rows embedded elsewhere land in the same layout `index build` writes, read
//! back equal, are not duplicated when written again, and bad rows are refused by name.

use biomedclip_collection::manifest::{Manifest, ModelId};
use biomedclip_collection::metadata::{Columns, Failure, Row};
use biomedclip_collection::npy::Dtype;
use biomedclip_collection::{Collection, Error, FolderWriter, Target};

const DIM: usize = 4;

fn model(name: &str, hash: char) -> ModelId {
    ModelId {
        name: name.into(),
        weights_blake3: hash.to_string().repeat(64),
    }
}

fn row(i: usize, caption: Option<&str>) -> Row {
    Row {
        image_path: format!("/data/{i}.png"),
        caption: caption.map(String::from),
        blake3: format!("{i:064x}"),
        size: 100 + i as i64,
        dicom: vec![None; 6],
        extra: vec![Some(format!("site{}", i % 2))],
    }
}

/// Row `i`'s unit vector: all of its length on axis `i % DIM`, signed by `i / DIM`.
fn unit(i: usize) -> Vec<f32> {
    let mut v = vec![0.0; DIM];
    v[i % DIM] = if (i / DIM).is_multiple_of(2) {
        1.0
    } else {
        -1.0
    };
    v
}

fn columns() -> Columns {
    Columns {
        captions: true,
        extra: vec!["site".into()],
    }
}

#[test]
fn appended_rows_read_back_and_are_not_duplicated() {
    let tmp = tempfile::tempdir().unwrap();
    let manifest = Manifest::new(model("m", 'a'), "f32", DIM, Dtype::F32, &columns());
    let rows: Vec<Row> = (0..6)
        .map(|i| row(i, (i != 2).then_some("a caption")))
        .collect();
    let images: Vec<f32> = (0..6).flat_map(unit).collect();
    // Row 2 has no caption: a zero vector.
    let captions: Vec<f32> = (0..6)
        .flat_map(|i| if i == 2 { vec![0.0; DIM] } else { unit(i + 1) })
        .collect();
    let failed = [Failure {
        path: "/data/broken.png".into(),
        blake3: None,
        error: "not an image".into(),
    }];
    {
        let mut w = FolderWriter::open(tmp.path(), &manifest).unwrap();
        assert_eq!(
            w.append(
                &rows[..4],
                &images[..4 * DIM],
                Some(&captions[..4 * DIM]),
                &failed
            )
            .unwrap(),
            Some(0)
        );
        // While one writer holds the collection, another is refused.
        let second = FolderWriter::open(tmp.path(), &manifest).unwrap_err();
        assert!(second.to_string().contains("the collection"), "{second}");
        // Rows 2..6: two are there already, only 4 and 5 are new.
        assert_eq!(
            w.append(
                &rows[2..],
                &images[2 * DIM..],
                Some(&captions[2 * DIM..]),
                &failed
            )
            .unwrap(),
            Some(1)
        );
        assert_eq!(w.manifest().rows, 6);
        assert_eq!(w.manifest().failed.len(), 1);
    }
    // Written again by a new writer: nothing to do.
    let mut w = FolderWriter::open(tmp.path(), &manifest).unwrap();
    assert_eq!(
        w.append(&rows, &images, Some(&captions), &failed).unwrap(),
        None
    );
    // One row given twice in one call is written once.
    let twice = [row(6, None), row(6, None)];
    let images_twice: Vec<f32> = [unit(6), unit(6)].concat();
    w.append(&twice, &images_twice, Some(&[0.0; 2 * DIM]), &[])
        .unwrap();
    assert_eq!(w.manifest().rows, 7);
    drop(w);

    let c = Collection::open(tmp.path()).unwrap();
    assert_eq!(c.len(), 7);
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(c.image_path(i), Some(r.image_path.as_str()));
        assert_eq!(&*c.row_f32(i, Target::Images).unwrap(), &unit(i)[..]);
        assert_eq!(
            &*c.row_f32(i, Target::Captions).unwrap(),
            &captions[i * DIM..(i + 1) * DIM]
        );
        let meta = c.metadata().row_json(i);
        assert_eq!(meta["site"], format!("site{}", i % 2), "{meta:?}");
        assert_eq!(meta["size"], 100 + i as i64, "{meta:?}");
    }
}

#[test]
fn rows_that_do_not_fit_are_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let manifest = Manifest::new(model("m", 'a'), "f32", DIM, Dtype::F16, &columns());
    let mut w = FolderWriter::open(tmp.path(), &manifest).unwrap();
    let rows = [row(0, Some("c")), row(1, Some("c"))];
    let good: Vec<f32> = (0..2).flat_map(unit).collect();
    let message = |e: Error| e.to_string();

    let mut long = good.clone();
    long[DIM] = 2.0;
    let e = message(w.append(&rows, &long, Some(&good), &[]).unwrap_err());
    assert!(e.contains("/data/1.png") && e.contains("length 2"), "{e}");
    let mut nan = good.clone();
    nan[1] = f32::NAN;
    let e = message(w.append(&rows, &nan, Some(&good), &[]).unwrap_err());
    assert!(e.contains("/data/0.png") && e.contains("NaN"), "{e}");
    // A row without a caption has a zero caption vector.
    let uncaptioned = [row(0, None), row(1, Some("c"))];
    let e = message(w.append(&uncaptioned, &good, Some(&good), &[]).unwrap_err());
    assert!(e.contains("/data/0.png") && e.contains("no caption"), "{e}");
    let e = message(w.append(&rows, &good[..DIM], Some(&good), &[]).unwrap_err());
    assert!(e.contains("2 rows need 8 image embedding values"), "{e}");
    let e = message(w.append(&rows, &good, None, &[]).unwrap_err());
    assert!(e.contains("has captions"), "{e}");
    let mut odd = rows.clone();
    odd[1].extra.push(None);
    let e = message(w.append(&odd, &good, Some(&good), &[]).unwrap_err());
    assert!(e.contains("/data/1.png") && e.contains("(site)"), "{e}");
    // Nothing was written by the refused calls.
    assert_eq!(w.manifest().rows, 0);
    drop(w);

    // Another model, or another storage type, is refused naming both.
    let other = Manifest::new(model("other", 'b'), "f32", DIM, Dtype::F16, &columns());
    let e = message(FolderWriter::open(tmp.path(), &other).unwrap_err());
    assert!(e.contains("m") && e.contains("other"), "{e}");
    let f32s = Manifest::new(model("m", 'a'), "f32", DIM, Dtype::F32, &columns());
    let e = message(FolderWriter::open(tmp.path(), &f32s).unwrap_err());
    assert!(e.contains("f16") && e.contains("f32"), "{e}");
}
