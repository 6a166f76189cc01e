//! A sparse, chunked allocation bitmap kept in the store: bit `n` set means "offset `n` of the
//! pool is taken". Chunks of 4096 bits live under `(pool id, chunk index)`; all-zero chunks are
//! not stored, so a /8 costs at most a 2 MiB bitmap and an IPv6 /64 only what is allocated.

use crate::error::Result;
use crate::store::{ReadTxn, Table, WriteTxn};

pub const CHUNK_BITS: u128 = 4096;
const CHUNK_BYTES: usize = (CHUNK_BITS / 8) as usize;
const WORDS: usize = CHUNK_BYTES / 8;

type Chunk = [u64; WORDS];

fn key(pool: &str, chunk: u128) -> Vec<u8> {
    let mut k = Vec::with_capacity(pool.len() + 17);
    k.extend_from_slice(pool.as_bytes());
    k.push(0);
    k.extend_from_slice(&chunk.to_be_bytes());
    k
}

fn prefix(pool: &str) -> Vec<u8> {
    let mut k = pool.as_bytes().to_vec();
    k.push(0);
    k
}

fn load(txn: &(impl ReadTxn + ?Sized), pool: &str, chunk: u128) -> Result<Option<Chunk>> {
    let Some(raw) = txn.get(Table::IpamBits, &key(pool, chunk))? else {
        return Ok(None);
    };
    let mut c = [0u64; WORDS];
    for (i, w) in raw.chunks_exact(8).take(WORDS).enumerate() {
        c[i] = u64::from_le_bytes(w.try_into().unwrap());
    }
    Ok(Some(c))
}

fn save(txn: &mut dyn WriteTxn, pool: &str, chunk: u128, c: &Chunk) -> Result<()> {
    if c.iter().all(|w| *w == 0) {
        txn.delete(Table::IpamBits, &key(pool, chunk))?;
        return Ok(());
    }
    let mut raw = Vec::with_capacity(CHUNK_BYTES);
    for w in c {
        raw.extend_from_slice(&w.to_le_bytes());
    }
    txn.put(Table::IpamBits, &key(pool, chunk), &raw)
}

fn split(off: u128) -> (u128, usize, u32) {
    let chunk = off / CHUNK_BITS;
    let bit = (off % CHUNK_BITS) as usize;
    (chunk, bit / 64, (bit % 64) as u32)
}

/// Set bit `off`; returns false if it was already set.
pub fn set(txn: &mut dyn WriteTxn, pool: &str, off: u128) -> Result<bool> {
    let (chunk, w, b) = split(off);
    let mut c = load(txn, pool, chunk)?.unwrap_or([0; WORDS]);
    if c[w] & (1 << b) != 0 {
        return Ok(false);
    }
    c[w] |= 1 << b;
    save(txn, pool, chunk, &c)?;
    Ok(true)
}

/// Clear bit `off`; returns false if it was not set.
pub fn clear(txn: &mut dyn WriteTxn, pool: &str, off: u128) -> Result<bool> {
    let (chunk, w, b) = split(off);
    let Some(mut c) = load(txn, pool, chunk)? else {
        return Ok(false);
    };
    if c[w] & (1 << b) == 0 {
        return Ok(false);
    }
    c[w] &= !(1 << b);
    save(txn, pool, chunk, &c)?;
    Ok(true)
}

/// The first clear bit in `from..=to`, scanning chunk by chunk (absent chunks answer at once).
pub fn find_clear(txn: &dyn WriteTxn, pool: &str, from: u128, to: u128) -> Result<Option<u128>> {
    if from > to {
        return Ok(None);
    }
    let mut off = from;
    loop {
        let (chunk, _, _) = split(off);
        let chunk_end = chunk * CHUNK_BITS + (CHUNK_BITS - 1);
        match load(txn, pool, chunk)? {
            None => return Ok(Some(off)),
            Some(c) => {
                let last = chunk_end.min(to);
                while off <= last {
                    let (_, w, b) = split(off);
                    // Bits of this word at or above `b` that are clear.
                    let free = !c[w] & (u64::MAX << b);
                    if free != 0 {
                        let cand = off - b as u128 + free.trailing_zeros() as u128;
                        return Ok((cand <= to).then_some(cand));
                    }
                    off = off - b as u128 + 64;
                }
            }
        }
        if chunk_end >= to {
            return Ok(None);
        }
        off = chunk_end + 1;
    }
}

/// Forget the whole bitmap of a pool.
pub fn clear_all(txn: &mut dyn WriteTxn, pool: &str) -> Result<()> {
    for (k, _) in txn.scan(Table::IpamBits, &prefix(pool))? {
        txn.delete(Table::IpamBits, &k)?;
    }
    Ok(())
}

/// Every set bit of a pool, ascending (for the consistency check).
pub fn set_bits(txn: &(impl ReadTxn + ?Sized), pool: &str) -> Result<Vec<u128>> {
    let mut out = Vec::new();
    let p = prefix(pool);
    for (k, raw) in txn.scan(Table::IpamBits, &p)? {
        let Ok(idx) = <[u8; 16]>::try_from(&k[p.len()..]) else {
            continue;
        };
        let chunk = u128::from_be_bytes(idx);
        for (i, w) in raw.chunks_exact(8).enumerate() {
            let mut word = u64::from_le_bytes(w.try_into().unwrap());
            while word != 0 {
                let b = word.trailing_zeros() as u128;
                out.push(chunk * CHUNK_BITS + i as u128 * 64 + b);
                word &= word - 1;
            }
        }
    }
    Ok(out)
}

/// Number of stored (non-empty) chunks: what the bitmap costs.
pub fn stored_chunks(txn: &(impl ReadTxn + ?Sized), pool: &str) -> Result<usize> {
    Ok(txn.scan(Table::IpamBits, &prefix(pool))?.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{mem::MemStore, Txn};
    use std::sync::Arc;

    fn txn() -> Txn {
        Txn::new(Arc::new(MemStore::new())).unwrap()
    }

    #[test]
    fn set_clear_find() {
        let mut t = txn();
        let t = &mut t;
        assert_eq!(find_clear(t, "p", 0, 10).unwrap(), Some(0));
        for i in 0..5000 {
            assert!(set(t, "p", i).unwrap());
        }
        assert!(!set(t, "p", 7).unwrap());
        assert_eq!(find_clear(t, "p", 0, 10_000).unwrap(), Some(5000));
        assert_eq!(find_clear(t, "p", 0, 4999).unwrap(), None);
        assert!(clear(t, "p", 4097).unwrap());
        assert_eq!(find_clear(t, "p", 100, 10_000).unwrap(), Some(4097));
        assert_eq!(find_clear(t, "p", 4098, 4200).unwrap(), None);
        assert_eq!(stored_chunks(t, "p").unwrap(), 2);
        let bits = set_bits(t, "p").unwrap();
        assert_eq!(bits.len(), 4999);
        assert!(!bits.contains(&4097) && bits.contains(&4096) && bits.contains(&4999));
        clear_all(t, "p").unwrap();
        assert_eq!(stored_chunks(t, "p").unwrap(), 0);
    }

    #[test]
    fn huge_offsets_are_sparse() {
        let mut t = txn();
        let t = &mut t;
        let base = u64::MAX as u128 - 10;
        assert!(set(t, "v6", base).unwrap());
        assert_eq!(find_clear(t, "v6", base, base + 5).unwrap(), Some(base + 1));
        assert_eq!(stored_chunks(t, "v6").unwrap(), 1);
        assert_eq!(set_bits(t, "v6").unwrap(), [base]);
    }
}
