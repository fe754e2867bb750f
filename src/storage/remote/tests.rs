//! The remote backend over object_store's in-memory store: the seam's rules (ranges, head and
//! tail, uploads all or nothing, listings, changed objects). The real S3 cluster and the real web
//! server are in tests/remote_cluster.rs and tests/remote_http.rs.

use super::*;
use crate::container::writer::PackOptions;
use crate::core::crypto::KeyFileKey;
use object_store::memory::InMemory;

fn memory() -> (Arc<InMemory>, RemoteStorage) {
    let store = Arc::new(InMemory::new());
    let storage = RemoteStorage::from_store(Arc::clone(&store) as Arc<dyn ObjectStore>, "s3://test");
    (store, storage)
}

/// Incompressible bytes (xorshift), so containers are as large as their plaintext.
fn plain(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn key() -> crate::Key {
    crate::Key::KeyFile(KeyFileKey::from_bytes([7; 32]))
}

fn pack_into(
    storage: &RemoteStorage,
    path: &str,
    data: &[u8],
    block_size: u32,
) -> crate::Result<crate::PackSummary> {
    let opts = PackOptions {
        block_size,
        ..PackOptions::default()
    };
    let to = [crate::Recipient::try_from(&key()).unwrap()];
    crate::ops::pack_in(storage, &mut &data[..], Path::new(path), &to, &opts, false)
}

fn object_names(store: &InMemory) -> Vec<String> {
    let store: Arc<dyn ObjectStore> = Arc::new(store.clone());
    runtime::run(async move {
        let (mut names, mut folders) = (Vec::new(), vec![None]);
        while let Some(folder) = folders.pop() {
            let listed = store.list_with_delimiter(folder.as_ref()).await.unwrap();
            names.extend(listed.objects.into_iter().map(|m| m.location.to_string()));
            folders.extend(listed.common_prefixes.into_iter().map(Some));
        }
        names
    })
    .unwrap()
}

#[test]
fn a_container_larger_than_a_part_uploads_in_parts_and_reads_back_at_any_offset() {
    let (store, storage) = memory();
    // 3 upload parts and a bit: a multipart upload, its last part short.
    let data = plain(3 * UPLOAD_PART + 12_345, 1);
    let summary = pack_into(&storage, "vault/big.bin.qltx", &data, 1 << 20).unwrap();
    assert_eq!(object_names(&store), vec!["vault/big.bin.qltx".to_string()]);
    let c = crate::Container::open_in(&storage, Path::new("vault/big.bin.qltx"), &key()).unwrap();
    assert_eq!(c.len(), data.len() as u64);
    assert_eq!(summary.original_size, data.len() as u64);
    // The start, the end (both from the bytes fetched at open), one byte, reads across blocks,
    // and one read larger than PART (parallel GETs).
    for (offset, len) in [
        (0u64, 100usize),
        (data.len() as u64 - 77, 77),
        (5_000_000, 1),
        ((1 << 20) - 10, 20),
        (1_234_567, 3 * PART as usize + 99),
    ] {
        let mut buf = vec![0; len];
        let n = c.read_at(offset, &mut buf).unwrap();
        assert_eq!(
            &buf[..n],
            &data[offset as usize..offset as usize + len],
            "{offset}+{len}"
        );
    }
    let mut out = Vec::new();
    Arc::new(c).unpack_to(&mut out, true, 2, &|_| {}).unwrap();
    assert!(out == data, "whole unpack differs");
}

#[test]
fn small_and_empty_containers_are_one_put_and_open() {
    let (store, storage) = memory();
    pack_into(&storage, "small.qltx", b"hello", 4096).unwrap();
    pack_into(&storage, "empty.qltx", b"", 4096).unwrap();
    let mut names = object_names(&store);
    names.sort();
    assert_eq!(names, ["empty.qltx", "small.qltx"]);
    let c = crate::Container::open_in(&storage, Path::new("small.qltx"), &key()).unwrap();
    let mut buf = [0u8; 5];
    c.read_at(0, &mut buf).unwrap();
    assert_eq!(&buf, b"hello");
    let e = crate::Container::open_in(&storage, Path::new("empty.qltx"), &key()).unwrap();
    assert_eq!(e.len(), 0);
    // A truly empty object opens too (an empty range has no bytes to ask for).
    storage
        .put(Path::new("zero"), b"", WriteOptions::default())
        .unwrap();
    let zero = storage.open(Path::new("zero")).unwrap();
    assert_eq!(zero.size().unwrap(), 0);
}

#[test]
fn an_upload_dropped_or_failed_leaves_no_object() {
    let (store, storage) = memory();
    let mut w = storage
        .create(Path::new("half.qltx"), WriteOptions::default())
        .unwrap();
    w.write_all(&plain(2 * UPLOAD_PART + 5, 2)).unwrap();
    drop(w);
    // A packer whose input fails mid-way.
    struct Failing(usize);
    impl io::Read for Failing {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0 == 0 {
                return Err(io::Error::other("input broke"));
            }
            let n = buf.len().min(self.0);
            buf[..n].fill(9);
            self.0 -= n;
            Ok(n)
        }
    }
    let to = [crate::Recipient::try_from(&key()).unwrap()];
    let e = crate::ops::pack_in(
        &storage,
        &mut Failing(20 << 20),
        Path::new("broken.qltx"),
        &to,
        &PackOptions::default(),
        false,
    )
    .unwrap_err();
    assert!(e.to_string().contains("input broke"), "{e}");
    assert!(object_names(&store).is_empty(), "{:?}", object_names(&store));
}

#[test]
fn an_existing_object_is_refused_unless_overwriting() {
    let (_store, storage) = memory();
    pack_into(&storage, "a.qltx", b"one", 4096).unwrap();
    let e = pack_into(&storage, "a.qltx", b"two", 4096).unwrap_err();
    assert!(matches!(e, Error::Exists { .. }), "{e:?}");
    assert!(e.to_string().contains("s3://test/a.qltx"), "{e}");
    let mut w = storage
        .create(Path::new("a.qltx"), WriteOptions::overwrite(true))
        .unwrap();
    w.write_all(b"replaced").unwrap();
    w.commit().unwrap();
    let o = storage.open(Path::new("a.qltx")).unwrap();
    let mut buf = [0u8; 8];
    o.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"replaced");
}

#[test]
fn listings_show_objects_and_folders_and_see_writes_through_the_storage_at_once() {
    let (_store, storage) = memory();
    pack_into(&storage, "v/a.txt.qltx", b"a", 4096).unwrap();
    pack_into(&storage, "v/sub/b.txt.qltx", b"b", 4096).unwrap();
    let vault = storage.at(Path::new("v")).unwrap();
    let mut names: Vec<_> = vault
        .list(Path::new(""))
        .unwrap()
        .into_iter()
        .map(|e| (e.name.into_string().unwrap(), e.kind))
        .collect();
    names.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        names,
        [
            ("a.txt.qltx".to_string(), EntryKind::Object),
            ("sub".to_string(), EntryKind::Folder)
        ]
    );
    assert_eq!(vault.stat(Path::new("sub")).unwrap().kind, EntryKind::Folder);
    assert_eq!(vault.stat(Path::new("")).unwrap().kind, EntryKind::Folder);
    let e = vault.stat(Path::new("nope.qltx")).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
    // Written through the storage: the cached listing is dropped at once.
    pack_into(&vault, "c.txt.qltx", b"c", 4096).unwrap();
    assert_eq!(vault.list(Path::new("")).unwrap().len(), 3);
    assert_eq!(
        vault.display(Path::new("sub/b.txt.qltx")),
        "s3://test/v/sub/b.txt.qltx"
    );
    // Names that are not plain names are refused, not sent.
    assert!(vault.open(Path::new("../x")).is_err());
}

#[test]
fn an_object_replaced_while_open_is_an_error_never_mixed_bytes() {
    let (store, storage) = memory();
    let data = plain(3 << 20, 3);
    pack_into(&storage, "c.qltx", &data, 1 << 20).unwrap();
    let c = crate::Container::open_in(&storage, Path::new("c.qltx"), &key()).unwrap();
    // Replaced behind the reader's back (another writer, or another client).
    let other = plain(3 << 20, 4);
    let other_store: Arc<dyn ObjectStore> = Arc::clone(&store) as _;
    let replacement = RemoteStorage::from_store(other_store, "s3://test");
    let mut w = replacement
        .create(Path::new("c.qltx"), WriteOptions::overwrite(true))
        .unwrap();
    w.write_all(&other).unwrap();
    w.commit().unwrap();
    let mut buf = vec![0u8; 4096];
    let e = c.read_at(1 << 20, &mut buf).unwrap_err();
    assert!(e.to_string().contains("changed"), "{e}");
    assert!(e.to_string().contains("s3://test/c.qltx"), "{e}");
}

#[test]
fn locations_parse_into_a_storage_and_a_path() {
    assert!(is_remote("s3://b/k") && is_remote("HTTPS://h/x.qltx") && is_remote("http://h/x"));
    assert!(!is_remote("s3://") && !is_remote("/tmp/x") && !is_remote("s3:/x"));
    let (storage, path) = RemoteStorage::parse(
        "https://example.com/media/film.mkv.qltx",
        &RemoteOptions::default(),
    )
    .unwrap();
    assert_eq!(path, Path::new("film.mkv.qltx"));
    assert_eq!(storage.display(&path), "https://example.com/media/film.mkv.qltx");
    assert_eq!(storage.endpoint(), "https://example.com");
    assert!(storage.create(&path, WriteOptions::default()).is_err());
    for bad in [
        "https://example.com/",
        "https://example.com",
        "ftp://x/y",
        "s3:///key",
    ] {
        assert!(
            RemoteStorage::parse(bad, &RemoteOptions::default()).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn a_key_change_rewrites_the_object_whole_and_leaves_no_removed_slot() {
    use crate::rekey::{rekey_in, SlotChange};
    let (_store, storage) = memory();
    let data = plain(2 * UPLOAD_PART + 1000, 9);
    pack_into(&storage, "r.qltx", &data, 1 << 20).unwrap();
    let second = crate::Key::KeyFile(KeyFileKey::from_bytes([8; 32]));
    let entropy = crate::core::crypto::SystemEntropy;
    let add = [SlotChange::Add {
        key: crate::Recipient::try_from(&second).unwrap(),
        iterations: 0,
    }];
    let path = Path::new("r.qltx");
    assert_eq!(rekey_in(&storage, path, &key(), &add, &entropy).unwrap().len(), 2);
    // The first slot removed: the first key no longer opens the object, the second reads it whole.
    rekey_in(&storage, path, &second, &[SlotChange::Remove(0)], &entropy).unwrap();
    match crate::Container::open_in(&storage, path, &key()) {
        Err(e) => assert!(e.is_wrong_key(), "{e}"),
        Ok(_) => panic!("a removed key still opens the rewritten object"),
    }
    let c = Arc::new(crate::Container::open_in(&storage, path, &second).unwrap());
    let mut out = Vec::new();
    c.unpack_to(&mut out, true, 2, &|_| {}).unwrap();
    assert!(out == data, "the rewritten object's plaintext differs");
}

#[test]
fn copy_and_remove_act_on_objects_and_name_what_is_missing() {
    let (store, s) = memory();
    s.put(Path::new("a/x.qltx"), b"one", WriteOptions::default())
        .unwrap();
    s.copy(Path::new("a/x.qltx"), Path::new("a/x.qltx.~1~")).unwrap();
    let e = s
        .copy(Path::new("a/x.qltx"), Path::new("a/x.qltx.~1~"))
        .unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
    s.remove(Path::new("a/x.qltx")).unwrap();
    assert_eq!(object_names(&store), ["a/x.qltx.~1~"]);
    let e = s.remove(Path::new("a/x.qltx")).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
}

#[test]
fn renames_move_objects_and_folders_and_folders_go_with_their_objects() {
    let (store, storage) = memory();
    let put = |p: &str, b: &[u8]| storage.put(Path::new(p), b, WriteOptions::default()).unwrap();
    put("a.qltx", b"a");
    put("dir/x.qltx", b"x");
    put("dir/sub/y.qltx", b"y");
    put("dirt.qltx", b"not under dir/");
    let read = |p: &str| {
        let o = storage.open(Path::new(p)).unwrap();
        let mut buf = vec![0; o.size().unwrap() as usize];
        o.read_exact_at(&mut buf, 0).unwrap();
        buf
    };

    // A file: over another with Replace; refused with NoReplace; Exchange is not offered.
    put("b.qltx", b"b");
    let e = storage
        .rename(Path::new("a.qltx"), Path::new("b.qltx"), Rename::NoReplace)
        .unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::AlreadyExists, "{e}");
    let e = storage
        .rename(Path::new("a.qltx"), Path::new("b.qltx"), Rename::Exchange)
        .unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::Unsupported, "{e}");
    storage
        .rename(Path::new("a.qltx"), Path::new("b.qltx"), Rename::Replace)
        .unwrap();
    assert_eq!(read("b.qltx"), b"a");
    assert!(storage.stat(Path::new("a.qltx")).is_err(), "the old name stays");

    // A folder: every object under it moves, and nothing that only shares its first letters.
    storage
        .rename(Path::new("dir"), Path::new("moved/deep"), Rename::NoReplace)
        .unwrap();
    let mut names = object_names(&store);
    names.sort();
    assert_eq!(
        names,
        [
            "b.qltx",
            "dirt.qltx",
            "moved/deep/sub/y.qltx",
            "moved/deep/x.qltx"
        ]
    );
    assert_eq!(read("moved/deep/sub/y.qltx"), b"y");
    assert_eq!(storage.stat(Path::new("moved")).unwrap().kind, EntryKind::Folder);
    let e = storage
        .rename(Path::new("moved"), Path::new("moved/inside"), Rename::Replace)
        .unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
    let e = storage
        .rename(Path::new("nothing"), Path::new("else"), Rename::Replace)
        .unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");

    // Folders: made where nothing is (nothing stored), refused over an object; removed only
    // when empty.
    storage.make_folder(Path::new("new")).unwrap();
    assert_eq!(object_names(&store).len(), 4, "a folder stored an object");
    let e = storage.make_folder(Path::new("b.qltx")).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::AlreadyExists, "{e}");
    let e = storage.remove_folder(Path::new("moved")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOTEMPTY), "{e}");
    storage.remove_folder(Path::new("new")).unwrap();
}
