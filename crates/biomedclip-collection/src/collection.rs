//! A collection opened for search: the manifest, every committed part's embeddings
//! memory-mapped, and the metadata of all parts as one table (row `i` of the table is
//! embedding `i`: parts in number order, rows in part order).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::layout::Layout;
use crate::manifest::{Manifest, ModelId};
use crate::metadata::{self, Table};
use crate::npy::Matrix;

/// Which embeddings a query is scored against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Target {
    /// The images (`img_emb`).
    #[default]
    Images,
    /// The captions (`text_emb`).
    Captions,
}

/// One committed part.
#[derive(Debug)]
pub struct Part {
    /// Its number.
    pub number: u32,
    /// Image embeddings.
    pub images: Matrix,
    /// Caption embeddings, in collections with captions.
    pub captions: Option<Matrix>,
    /// Index of its first row in the collection.
    pub offset: usize,
}

/// An opened collection.
#[derive(Debug)]
pub struct Collection {
    layout: Layout,
    manifest: Manifest,
    parts: Vec<Part>,
    metadata: Table,
}

impl Collection {
    /// Opens the collection at `root`, checking that every part is whole: its embedding
    /// files are valid npy matrices of the manifest's type and dimensions with as many rows
    /// as its metadata.
    pub fn open(root: &Path) -> Result<Collection> {
        let layout = Layout::new(root);
        let manifest = Manifest::read(&layout.manifest())?;
        let mut infos = Vec::new();
        for n in layout.committed_parts()? {
            let path = layout.metadata(n);
            infos.push((n, metadata::read_part(&path)?));
        }
        // A part an interrupted update superseded but could not remove yet is not searched.
        let replaced: Vec<u32> = infos
            .iter()
            .flat_map(|(_, (_, i))| i.replaces.clone())
            .collect();
        let mut parts = Vec::new();
        let mut table = Table::default();
        let mut offset = 0;
        for (n, (part_table, info)) in infos {
            if replaced.contains(&n) {
                continue;
            }
            let open = |path: PathBuf| -> Result<Matrix> {
                let m = Matrix::open(&path)?;
                if m.rows() != info.rows || m.dim() != manifest.dim || m.dtype() != manifest.dtype {
                    return Err(Error::corrupt(
                        &path,
                        format!(
                            "{} x {} {} embeddings, but the part has {} rows and the \
                             collection stores {} x {}",
                            m.rows(),
                            m.dim(),
                            m.dtype(),
                            info.rows,
                            manifest.dim,
                            manifest.dtype
                        ),
                    ));
                }
                Ok(m)
            };
            let images = open(layout.img_emb(n))?;
            let captions = manifest
                .captions
                .then(|| open(layout.text_emb(n)))
                .transpose()?;
            table.append(part_table, &layout.metadata(n))?;
            parts.push(Part {
                number: n,
                images,
                captions,
                offset,
            });
            offset += info.rows;
        }
        Ok(Collection {
            layout,
            manifest,
            parts,
            metadata: table,
        })
    }

    /// The collection's folder.
    pub fn root(&self) -> &Path {
        self.layout.root()
    }

    /// Its layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The parts, in number order.
    pub fn parts(&self) -> &[Part] {
        &self.parts
    }

    /// The metadata of every row.
    pub fn metadata(&self) -> &Table {
        &self.metadata
    }

    /// Rows.
    pub fn len(&self) -> usize {
        self.metadata.rows()
    }

    /// Whether it has no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Embedding dimensions.
    pub fn dim(&self) -> usize {
        self.manifest.dim
    }

    /// Refuses a model other than the collection's, naming both.
    pub fn check_model(&self, model: &ModelId) -> Result<()> {
        self.manifest.check_model(model, &self.layout.manifest())
    }

    /// The image file of row `id`.
    pub fn image_path(&self, id: usize) -> Option<&str> {
        (id < self.len())
            .then(|| self.metadata.text("image_path", id))
            .flatten()
    }

    /// Row `id`'s embedding for `target`, as f32.
    pub fn row_f32(&self, id: usize, target: Target) -> Option<std::borrow::Cow<'_, [f32]>> {
        let at = self
            .parts
            .partition_point(|p| p.offset <= id)
            .checked_sub(1)?;
        let part = &self.parts[at];
        let matrix = match target {
            Target::Images => &part.images,
            Target::Captions => part.captions.as_ref()?,
        };
        let i = id - part.offset;
        (i < matrix.rows()).then(|| matrix.rows_f32(i..i + 1))
    }

    /// The embedding matrix of `part` for `target`, if the collection has it.
    pub fn matrix<'a>(&self, part: &'a Part, target: Target) -> Result<&'a Matrix> {
        match target {
            Target::Images => Ok(&part.images),
            Target::Captions => part.captions.as_ref().ok_or_else(|| {
                Error::Invalid(format!(
                    "{}: the collection has no captions to search",
                    self.root().display()
                ))
            }),
        }
    }
}
