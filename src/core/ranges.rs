//! Which slice of which block a plaintext byte range needs: the one place that maps byte ranges
//! onto the footer index. Random reads, range writes, the block cache, the FUSE mount and the HTTP
//! response bodies all walk a range through [`slices`]; nothing else does this arithmetic.
//!
//! Pure and overflow-safe: a range is clipped at the end of the file (an offset near `u64::MAX`,
//! or a length running past the end, is fine), an empty range or an empty file needs no block.
//! The entries must tile the plaintext from 0 without gaps, as [`crate::format::Footer::check_layout`]
//! guarantees for every container a reader opens; over entries that do not, the walk stops at the
//! first gap instead of going wrong.
//!
//! ```
//! use qeltrix::format::FooterEntry;
//! use qeltrix::ranges::{slices, BlockSlice};
//! let entry = |i: u64| FooterEntry { offset: 0, len: 0, plain_offset: i * 10, plain_size: 10 };
//! let index = [entry(0), entry(1), entry(2)];
//! let parts: Vec<BlockSlice> = slices(&index, 8, 5).collect();
//! assert_eq!(parts[0], BlockSlice { index: 0, block_start: 0, in_block: 8..10, in_output: 0 });
//! assert_eq!(parts[1], BlockSlice { index: 1, block_start: 10, in_block: 0..3, in_output: 2 });
//! ```

use crate::core::format::FooterEntry;
use std::ops::Range;

/// One block a range needs, and which part of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockSlice {
    /// The block's number in the index.
    pub index: u64,
    /// Plaintext offset of the block's first byte.
    pub block_start: u64,
    /// The bytes of the block's plaintext the range needs: `block[in_block]`, never empty.
    pub in_block: Range<usize>,
    /// Where those bytes go, counted from the start of the range.
    pub in_output: u64,
}

impl BlockSlice {
    /// Bytes in the slice.
    pub fn len(&self) -> usize {
        self.in_block.len()
    }

    /// Always false: a walk yields no empty slice. (Here for clippy's `len_without_is_empty`.)
    pub fn is_empty(&self) -> bool {
        self.in_block.is_empty()
    }

    /// Plaintext offset just past the slice: where the next slice of the range starts.
    pub fn end(&self) -> u64 {
        self.block_start + self.in_block.end as u64
    }
}

/// End (exclusive) of an entry's plaintext, saturating instead of overflowing.
fn entry_end(e: &FooterEntry) -> u64 {
    e.plain_offset.saturating_add(e.plain_size)
}

/// Plaintext length the index covers: where its last block ends (0 for no blocks).
pub fn plain_len(entries: &[FooterEntry]) -> u64 {
    entries.last().map_or(0, entry_end)
}

/// The block holding plaintext byte `offset`, if it is inside the file.
pub fn block_of(entries: &[FooterEntry], offset: u64) -> Option<u64> {
    let index = entries.partition_point(|e| entry_end(e) <= offset);
    let e = entries.get(index)?;
    (e.plain_offset <= offset).then_some(index as u64)
}

/// `offset..offset + len` clipped to the file: what a read of it returns. Empty (at
/// `min(offset, file length)`) when nothing of it is inside.
pub fn clip(entries: &[FooterEntry], offset: u64, len: u64) -> Range<u64> {
    let file_len = plain_len(entries);
    let start = offset.min(file_len);
    start..offset.saturating_add(len).min(file_len).max(start)
}

/// The first and last block `offset..offset + len` (clipped to the file) needs, or `None` when it
/// needs none.
pub fn block_span(entries: &[FooterEntry], offset: u64, len: u64) -> Option<(u64, u64)> {
    let range = clip(entries, offset, len);
    if range.is_empty() {
        return None;
    }
    Some((block_of(entries, range.start)?, block_of(entries, range.end - 1)?))
}

/// The plaintext of the blocks `offset..offset + len` (clipped) needs, whole: from the first
/// one's start to the last one's end. What reading the range costs to decrypt; `None` when it
/// needs no block.
pub fn blocks_cover(entries: &[FooterEntry], offset: u64, len: u64) -> Option<Range<u64>> {
    let (first, last) = block_span(entries, offset, len)?;
    let (first, last) = (entries.get(first as usize)?, entries.get(last as usize)?);
    Some(first.plain_offset..entry_end(last))
}

/// The blocks `offset..offset + len` needs, in order, each with the slice of it the range wants
/// and where that slice goes. The range is clipped at the end of the file, so the slices' lengths
/// add up to `clip(entries, offset, len).end - offset` (0 if `offset` is past the end).
pub fn slices(entries: &[FooterEntry], offset: u64, len: u64) -> Slices<'_> {
    let range = clip(entries, offset, len);
    let index = if range.is_empty() {
        entries.len()
    } else {
        block_of(entries, range.start).map_or(entries.len(), |i| i as usize)
    };
    Slices {
        entries,
        start: range.start,
        pos: range.start,
        end: range.end,
        index,
    }
}

/// The walk of [`slices`].
#[derive(Clone, Debug)]
pub struct Slices<'a> {
    entries: &'a [FooterEntry],
    start: u64,
    pos: u64,
    end: u64,
    index: usize,
}

impl Slices<'_> {
    /// The clipped plaintext range still to walk.
    pub fn remaining(&self) -> Range<u64> {
        self.pos..self.end.max(self.pos)
    }
}

impl Iterator for Slices<'_> {
    type Item = BlockSlice;

    fn next(&mut self) -> Option<BlockSlice> {
        if self.pos >= self.end {
            return None;
        }
        let e = self.entries.get(self.index)?;
        let block_end = entry_end(e);
        if !(e.plain_offset <= self.pos && self.pos < block_end) {
            // A gap or an overlap in the index: nothing sensible to yield.
            self.end = self.pos;
            return None;
        }
        let stop = self.end.min(block_end);
        // Both are below `plain_size`, which the layout check bounds by the block size.
        let to_usize = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
        let slice = BlockSlice {
            index: self.index as u64,
            block_start: e.plain_offset,
            in_block: to_usize(self.pos - e.plain_offset)..to_usize(stop - e.plain_offset),
            in_output: self.pos - self.start,
        };
        self.pos = stop;
        self.index += 1;
        Some(slice)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        if self.pos >= self.end {
            return (0, Some(0));
        }
        (1, Some(self.entries.len().saturating_sub(self.index)))
    }
}

impl std::iter::FusedIterator for Slices<'_> {}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An index of blocks with these plaintext sizes, tiling the plaintext from 0.
    fn index(sizes: &[u64]) -> Vec<FooterEntry> {
        let mut at = 0;
        sizes
            .iter()
            .map(|&plain_size| {
                let e = FooterEntry {
                    offset: 0,
                    len: 0,
                    plain_offset: at,
                    plain_size,
                };
                at += plain_size;
                e
            })
            .collect()
    }

    fn walk(entries: &[FooterEntry], offset: u64, len: u64) -> Vec<(u64, Range<usize>, u64)> {
        slices(entries, offset, len)
            .map(|s| (s.index, s.in_block, s.in_output))
            .collect()
    }

    /// The naive reference: byte by byte, which block and where in it.
    fn naive(sizes: &[u64], offset: u64, len: u64) -> Vec<(u64, Range<usize>, u64)> {
        let total: u64 = sizes.iter().sum();
        let mut out: Vec<(u64, Range<usize>, u64)> = Vec::new();
        let end = offset.saturating_add(len).min(total);
        let mut pos = offset;
        while pos < end {
            let (mut block, mut start) = (0usize, 0u64);
            while start + sizes[block] <= pos {
                start += sizes[block];
                block += 1;
            }
            let at = (pos - start) as usize;
            match out.last_mut() {
                Some(last) if last.0 == block as u64 => last.1.end = at + 1,
                _ => out.push((block as u64, at..at + 1, pos - offset)),
            }
            pos += 1;
        }
        out
    }

    #[test]
    fn a_range_inside_one_block() {
        let e = index(&[10, 10, 10]);
        assert_eq!(walk(&e, 12, 5), [(1, 2..7, 0)]);
        assert_eq!(block_span(&e, 12, 5), Some((1, 1)));
    }

    #[test]
    fn a_range_across_blocks() {
        let e = index(&[10, 10, 10]);
        assert_eq!(walk(&e, 5, 20), [(0, 5..10, 0), (1, 0..10, 5), (2, 0..5, 15)]);
        assert_eq!(block_span(&e, 5, 20), Some((0, 2)));
        assert_eq!(blocks_cover(&e, 5, 20), Some(0..30));
        assert_eq!(blocks_cover(&e, 12, 5), Some(10..20));
        assert_eq!(blocks_cover(&e, 30, 5), None);
    }

    #[test]
    fn ranges_exactly_on_block_boundaries() {
        let e = index(&[10, 10, 10]);
        assert_eq!(walk(&e, 10, 10), [(1, 0..10, 0)]);
        assert_eq!(walk(&e, 0, 20), [(0, 0..10, 0), (1, 0..10, 10)]);
        assert_eq!(walk(&e, 20, 10), [(2, 0..10, 0)]);
        assert_eq!(walk(&e, 9, 2), [(0, 9..10, 0), (1, 0..1, 1)]);
        assert_eq!(block_of(&e, 9), Some(0));
        assert_eq!(block_of(&e, 10), Some(1));
        assert_eq!(block_of(&e, 29), Some(2));
        assert_eq!(block_of(&e, 30), None);
    }

    #[test]
    fn clipped_at_the_end_with_a_short_last_block() {
        let e = index(&[10, 10, 3]);
        assert_eq!(walk(&e, 18, 100), [(1, 8..10, 0), (2, 0..3, 2)]);
        assert_eq!(walk(&e, 22, 1), [(2, 2..3, 0)]);
        assert_eq!(walk(&e, 23, 1), []);
        assert_eq!(clip(&e, 18, 100), 18..23);
        assert_eq!(clip(&e, 40, 5), 23..23);
        assert_eq!(plain_len(&e), 23);
        assert_eq!(block_span(&e, 18, 100), Some((1, 2)));
        assert_eq!(block_span(&e, 23, 100), None);
    }

    #[test]
    fn empty_ranges_and_empty_files_need_no_block() {
        let e = index(&[10, 10]);
        assert_eq!(walk(&e, 0, 0), []);
        assert_eq!(walk(&e, 10, 0), []);
        assert_eq!(walk(&e, 20, 0), []);
        assert_eq!(block_span(&e, 5, 0), None);
        assert_eq!(walk(&[], 0, 10), []);
        assert_eq!(walk(&[], 0, 0), []);
        assert_eq!(block_of(&[], 0), None);
        assert_eq!(clip(&[], 3, 7), 0..0);
        assert_eq!(plain_len(&[]), 0);
        assert_eq!(slices(&[], 0, 10).size_hint(), (0, Some(0)));
    }

    #[test]
    fn offsets_near_the_top_of_u64_do_not_overflow() {
        let e = index(&[10, 10]);
        assert_eq!(walk(&e, u64::MAX, u64::MAX), []);
        assert_eq!(walk(&e, u64::MAX - 1, 5), []);
        assert_eq!(walk(&e, 15, u64::MAX), [(1, 5..10, 0)]);
        assert_eq!(block_of(&e, u64::MAX), None);
        assert_eq!(clip(&e, u64::MAX, u64::MAX), 20..20);
        // An index that reaches the top of u64 (not a real container, but it must not wrap).
        let top = [FooterEntry {
            offset: 0,
            len: 0,
            plain_offset: u64::MAX - 4,
            plain_size: 10,
        }];
        assert_eq!(block_of(&top, u64::MAX - 1), Some(0));
        assert_eq!(plain_len(&top), u64::MAX);
        assert_eq!(
            walk(&top, 0, 3),
            [],
            "a gap before the first block yields nothing"
        );
    }

    #[test]
    fn a_gap_in_the_index_stops_the_walk() {
        let mut e = index(&[10, 10, 10]);
        e[2].plain_offset = 25;
        assert_eq!(walk(&e, 5, 100), [(0, 5..10, 0), (1, 0..10, 5)]);
    }

    #[test]
    fn slices_tell_where_they_end() {
        let e = index(&[10, 10, 10]);
        let parts: Vec<BlockSlice> = slices(&e, 5, 10).collect();
        assert_eq!(parts.iter().map(BlockSlice::end).collect::<Vec<_>>(), [10, 15]);
        assert_eq!(parts.iter().map(BlockSlice::len).sum::<usize>(), 10);
        let mut walk = slices(&e, 5, 10);
        walk.next();
        assert_eq!(walk.remaining(), 10..15);
    }

    proptest! {
        #[test]
        fn matches_the_byte_by_byte_reference(
            sizes in proptest::collection::vec(1u64..40, 0..8),
            offset in 0u64..300,
            len in 0u64..300,
        ) {
            let e = index(&sizes);
            prop_assert_eq!(walk(&e, offset, len), naive(&sizes, offset, len));
            let total: u64 = sizes.iter().sum();
            let got: u64 = slices(&e, offset, len).map(|s| s.len() as u64).sum();
            prop_assert_eq!(got, offset.saturating_add(len).min(total).saturating_sub(offset));
            let reference_block = naive(&sizes, offset, 1).first().map(|s| s.0);
            prop_assert_eq!(block_of(&e, offset), reference_block);
        }
    }
}
