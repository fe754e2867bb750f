//! Format version 4 (proposed, `docs/design/format-4.md`): which bytes of a plaintext range come
//! from a patch's unit and which from the base's blocks.
//!
//! A chain of patches, oldest first, overrides the base 4 KiB page by page; a newer patch's unit
//! wins over an older one's for the same page. [`Overlay`] keeps, for every overridden page,
//! the newest unit, and cuts a read into [`Piece`]s in plaintext order. Pure: no I/O, no keys.

use super::format::{PatchFooter, UNIT};

/// Where one overridden page's bytes are: unit `unit` of patch `patch` (indices into the chain
/// given to [`Overlay::new`] and into that patch's `units`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnitRef {
    /// Index of the patch in the chain, oldest first.
    pub patch: u32,
    /// Index of the unit in that patch.
    pub unit: u32,
}

/// A run of a plaintext read, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Piece {
    /// Bytes `skip .. skip + len` of a unit's plaintext.
    Unit {
        /// The unit.
        at: UnitRef,
        /// Offset within the unit's plaintext.
        skip: u64,
        /// Bytes taken.
        len: u64,
    },
    /// Plaintext bytes `offset .. offset + len` of the base.
    Base {
        /// Plaintext offset.
        offset: u64,
        /// Bytes taken.
        len: u64,
    },
}

/// The newest unit of every page a chain overrides, by page.
#[derive(Clone, Debug, Default)]
pub struct Overlay {
    /// (page index, newest unit), sorted by page.
    pages: Vec<(u64, UnitRef)>,
}

impl Overlay {
    /// The overlay of `chain`, oldest patch first. Each patch's units are sorted by
    /// plain_offset, one per page (as `PatchFooter::decode` checks).
    pub fn new<'a>(chain: impl IntoIterator<Item = &'a PatchFooter>) -> Self {
        let mut pages: Vec<(u64, UnitRef)> = Vec::new();
        for (patch, footer) in chain.into_iter().enumerate() {
            for (unit, u) in footer.units.iter().enumerate() {
                let at = UnitRef {
                    patch: patch as u32,
                    unit: unit as u32,
                };
                pages.push((u.plain_offset / UNIT, at));
            }
        }
        // Stable: for one page the newer patch comes later, and the last of a run is kept.
        pages.sort_by_key(|&(page, _)| page);
        let mut newest: Vec<(u64, UnitRef)> = Vec::with_capacity(pages.len());
        for entry in pages {
            match newest.last_mut() {
                Some(last) if last.0 == entry.0 => *last = entry,
                _ => newest.push(entry),
            }
        }
        Overlay { pages: newest }
    }

    /// Pages overridden.
    pub fn len(&self) -> usize {
        self.pages.len()
    }

    /// True when nothing is overridden.
    pub fn is_empty(&self) -> bool {
        self.pages.is_empty()
    }

    /// Each overridden page and its newest unit, by page.
    pub fn iter(&self) -> impl Iterator<Item = (u64, UnitRef)> + '_ {
        self.pages.iter().copied()
    }

    /// The newest unit of page `page`, if one overrides it.
    pub fn unit_of(&self, page: u64) -> Option<UnitRef> {
        self.pages
            .binary_search_by_key(&page, |&(p, _)| p)
            .ok()
            .map(|i| self.pages[i].1)
    }

    /// Cuts plaintext `offset .. offset + len` into pieces, in order: the units' bytes where a
    /// unit overrides the page, the base's elsewhere, adjacent base runs merged. The caller
    /// keeps the range within the plaintext (a unit covers its page up to the plaintext's end).
    pub fn pieces(&self, offset: u64, len: u64) -> Vec<Piece> {
        let end = offset.saturating_add(len);
        let mut out = Vec::new();
        if len == 0 {
            return out;
        }
        let mut at = offset;
        let first = self.pages.partition_point(|&(p, _)| page_end(p) <= offset);
        for &(page, unit) in &self.pages[first..] {
            let page_start = page * UNIT;
            if page_start >= end {
                break;
            }
            if page_start > at {
                out.push(Piece::Base {
                    offset: at,
                    len: page_start - at,
                });
                at = page_start;
            }
            let take = page_end(page).min(end) - at;
            out.push(Piece::Unit {
                at: unit,
                skip: at - page_start,
                len: take,
            });
            at += take;
        }
        if at < end {
            out.push(Piece::Base {
                offset: at,
                len: end - at,
            });
        }
        out
    }
}

/// The plaintext offset just past page `page`. The last page of a plaintext that reaches the
/// top of the u64 range ends there: no sum here overflows, whatever a footer says.
fn page_end(page: u64) -> u64 {
    page.saturating_add(1).saturating_mul(UNIT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::format::UnitEntry;

    fn patch(pages: &[u64]) -> PatchFooter {
        PatchFooter {
            generation: 2,
            prev_offset: 4096,
            prev_size: 100,
            prev_mac: [0; 32],
            base_generation: 1,
            patch_salt: [0; 32],
            nonce_base: [0; 12],
            mode: 0o600,
            mtime_sec: 0,
            mtime_nsec: 0,
            units: pages
                .iter()
                .map(|&p| UnitEntry {
                    plain_offset: p * UNIT,
                    offset: 0,
                    len: UNIT as u32,
                    unit_hash: [0; 32],
                })
                .collect(),
        }
    }

    fn r(patch: u32, unit: u32) -> UnitRef {
        UnitRef { patch, unit }
    }

    #[test]
    fn a_unit_at_the_top_of_the_u64_range_is_cut_without_overflow() {
        let top = u64::MAX / UNIT;
        let o = Overlay::new(&[patch(&[top])]);
        let (offset, len) = (top * UNIT - 10, UNIT + 9);
        assert_eq!(
            o.pieces(offset, len),
            vec![
                Piece::Base { offset, len: 10 },
                Piece::Unit {
                    at: r(0, 0),
                    skip: 0,
                    len: UNIT - 1
                },
            ]
        );
    }

    #[test]
    fn the_newest_patch_wins_each_page() {
        let o = Overlay::new(&[patch(&[1, 3, 5]), patch(&[3, 4]), patch(&[5])]);
        assert_eq!(o.len(), 4);
        assert_eq!(o.unit_of(0), None);
        assert_eq!(o.unit_of(1), Some(r(0, 0)));
        assert_eq!(o.unit_of(3), Some(r(1, 0)));
        assert_eq!(o.unit_of(4), Some(r(1, 1)));
        assert_eq!(o.unit_of(5), Some(r(2, 0)));
        assert!(Overlay::new(&[] as &[PatchFooter]).is_empty());
    }

    #[test]
    fn a_read_is_cut_into_base_and_unit_pieces_in_order() {
        let o = Overlay::new(&[patch(&[1, 2, 5])]);
        assert_eq!(
            o.pieces(100, 6 * UNIT),
            vec![
                Piece::Base {
                    offset: 100,
                    len: UNIT - 100
                },
                Piece::Unit {
                    at: r(0, 0),
                    skip: 0,
                    len: UNIT
                },
                Piece::Unit {
                    at: r(0, 1),
                    skip: 0,
                    len: UNIT
                },
                Piece::Base {
                    offset: 3 * UNIT,
                    len: 2 * UNIT
                },
                Piece::Unit {
                    at: r(0, 2),
                    skip: 0,
                    len: UNIT
                },
                Piece::Base {
                    offset: 6 * UNIT,
                    len: 100
                },
            ]
        );
        assert_eq!(
            o.pieces(UNIT + 10, 20),
            vec![Piece::Unit {
                at: r(0, 0),
                skip: 10,
                len: 20
            }]
        );
        assert_eq!(
            o.pieces(3 * UNIT, 10),
            vec![Piece::Base {
                offset: 3 * UNIT,
                len: 10
            }]
        );
        assert_eq!(o.pieces(7, 0), vec![]);
    }

    #[test]
    fn pieces_always_tile_the_range_and_agree_with_unit_of() {
        let o = Overlay::new(&[patch(&[0, 2, 3, 9]), patch(&[2, 7, 8])]);
        for offset in (0..12 * UNIT).step_by(1531) {
            for len in [0, 1, 4095, 4096, 4097, 9000, 30_000] {
                let mut at = offset;
                for piece in o.pieces(offset, len) {
                    match piece {
                        Piece::Unit { at: unit, skip, len } => {
                            assert_eq!(o.unit_of(at / UNIT), Some(unit));
                            assert_eq!(skip, at % UNIT);
                            assert!(len > 0 && skip + len <= UNIT);
                            at += len;
                        }
                        Piece::Base { offset: o2, len } => {
                            assert_eq!(o2, at);
                            assert!(len > 0);
                            for page in at / UNIT..=(at + len - 1) / UNIT {
                                assert_eq!(o.unit_of(page), None, "{offset} {len}");
                            }
                            at += len;
                        }
                    }
                }
                assert_eq!(at, offset + len);
            }
        }
    }
}
