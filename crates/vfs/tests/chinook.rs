//! A real database (Chinook) loaded page by page into each store opens through the VFS,
//! passes integrity_check and answers real queries exactly like plain SQLite on the file.

mod common;

use common::{integrity, rows, testdata};
use dosql_pagestore::{MemStore, PageStore, commit_from_image, image_of};
use dosql_vfs::{Database, VfsConfig};
use rusqlite::{Connection, OpenFlags};

const QUERIES: &[&str] = &[
    "SELECT count(*) FROM Track",
    "SELECT name FROM sqlite_schema WHERE type='table' ORDER BY name",
    "SELECT a.Name, count(*) AS albums FROM Artist a JOIN Album al ON al.ArtistId=a.ArtistId
       GROUP BY a.ArtistId ORDER BY albums DESC, a.Name LIMIT 10",
    "SELECT g.Name, round(sum(il.UnitPrice*il.Quantity), 2) FROM InvoiceLine il
       JOIN Track t ON t.TrackId=il.TrackId JOIN Genre g ON g.GenreId=t.GenreId
       GROUP BY g.GenreId ORDER BY 2 DESC",
    "SELECT c.Country, count(DISTINCT c.CustomerId), round(sum(i.Total), 2) FROM Customer c
       JOIN Invoice i ON i.CustomerId=c.CustomerId GROUP BY c.Country ORDER BY 3 DESC, 1",
    "SELECT e.LastName, m.LastName FROM Employee e LEFT JOIN Employee m ON e.ReportsTo=m.EmployeeId
       ORDER BY e.EmployeeId",
    "SELECT p.Name, count(pt.TrackId) FROM Playlist p LEFT JOIN PlaylistTrack pt
       ON pt.PlaylistId=p.PlaylistId GROUP BY p.PlaylistId ORDER BY p.PlaylistId",
    "SELECT TrackId, Name, Milliseconds FROM Track WHERE Milliseconds > 1000000 ORDER BY TrackId",
    "SELECT strftime('%Y', InvoiceDate) AS y, count(*), round(avg(Total), 4) FROM Invoice
       GROUP BY y ORDER BY y",
    "SELECT * FROM Track WHERE Name LIKE '%love%' ORDER BY TrackId",
    "SELECT * FROM Invoice ORDER BY InvoiceId",
];

fn check(name: &str, store: impl PageStore, original: &Connection) {
    let db = Database::attach(name, store, VfsConfig::default()).unwrap();
    assert_eq!(db.head().page_count, 246, "Chinook has 246 pages");
    let conn = db.connect().unwrap();
    assert_eq!(integrity(&conn), "ok");
    for q in QUERIES {
        let got = rows(&conn, q);
        assert!(!got.is_empty(), "{q} returned nothing");
        assert_eq!(got, rows(original, q), "{name}: {q}");
    }
    // Writes go through too, and the result is still a valid database.
    conn.execute(
        "UPDATE Track SET Name = Name || ' (remastered)' WHERE AlbumId = 1",
        [],
    )
    .unwrap();
    assert_eq!(integrity(&conn), "ok");
}

#[test]
fn chinook_round_trips_through_every_store() {
    let path = testdata().join("chinook/Chinook_Sqlite.sqlite");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let original = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let (size, commit) = commit_from_image(&bytes).unwrap();

    let mut mem = MemStore::new(size);
    mem.commit(commit.clone()).unwrap();
    assert_eq!(
        image_of(&mut mem).unwrap(),
        bytes,
        "export gives back the same file"
    );
    check("chinook-mem", mem, &original);

    let dir = tempfile::tempdir().unwrap();
    let mut redb = common::durable(dir.path().join("chinook.redb"), size);
    redb.commit(commit).unwrap();
    check("chinook-redb", redb, &original);
}

#[test]
fn files_that_are_not_databases_are_refused() {
    assert!(commit_from_image(b"hello").is_err());
    let path = testdata().join("chinook/Chinook_Sqlite.sqlite");
    let bytes = std::fs::read(path).unwrap();
    let err = commit_from_image(&bytes[..bytes.len() - 100]).unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");
}
