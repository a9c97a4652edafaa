//! Handles: the `fio_tls_s *` values C holds are not addresses.
//!
//! A handle names a slot of a process-wide table plus the slot's
//! *generation*, which goes up each time the slot's object is destroyed. So
//! a handle kept after `fio_tls_destroy` stays recognisable as destroyed
//! even after a new object took the same slot (which the allocator's reuse
//! of an address could not tell apart), and the lookup that turns a handle
//! into the object takes a counted reference under the table's lock: a
//! destroy on another thread can no longer free an object between the
//! check and the use.
//!
//! Layout of a handle (64 bits; 64-bit Linux only, see lib.rs):
//!
//! | bits   | what |
//! |--------|------|
//! | 63..48 | [`TAG`] `0xF715` |
//! | 47..28 | slot index (up to 2^20 - 1 objects alive at once) |
//! | 27..4  | generation (2^24 per slot) |
//! | 3..0   | zero (a handle is 16-byte aligned, as a pointer to a struct may need to be) |
//!
//! The tag makes every handle a non-canonical address on x86-64 and (its
//! bits 55..48 being non-zero) outside the 48-bit address space of
//! AArch64's top-byte-ignore: C code that dereferences one faults at once
//! instead of reading someone's memory. It also means no real pointer --
//! into the caller's memory or ours, static, stack or heap -- can ever be
//! taken for a handle. A slot whose generation would wrap is retired for
//! good, so a destroyed handle is never confused with a later object.

use std::collections::VecDeque;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// The top 16 bits of every handle.
pub const TAG: u64 = 0xF715;
const TAG_SHIFT: u32 = 48;
const INDEX_BITS: u32 = 20;
const INDEX_SHIFT: u32 = 28;
const GEN_BITS: u32 = 24;
const GEN_SHIFT: u32 = 4;
/// Slots in the table at most: objects alive at once, plus retired slots.
pub const MAX_SLOTS: usize = (1 << INDEX_BITS) - 1;
/// Generations a slot goes through before it is retired.
const GEN_LIMIT: u32 = 1 << GEN_BITS;

/// What a value passed as a handle turned out to be.
pub enum Lookup<T> {
    /// A live object (a counted reference: it stays valid while held, even
    /// if another thread destroys the handle meanwhile).
    Live(Arc<T>),
    Null,
    /// Returned by `fio_tls_new` once, since destroyed.
    Destroyed,
    /// Never returned by `fio_tls_new` (any real address, or garbage).
    Foreign,
}

struct Slot<T> {
    /// The generation the slot's current (or next) object is issued under.
    generation: u32,
    object: Option<Arc<T>>,
}

struct Table<T> {
    slots: Vec<Slot<T>>,
    /// Free slots, oldest destroy first (spreads generations over slots).
    free: VecDeque<u32>,
}

/// A table of objects reachable from C through handles.
pub struct Registry<T> {
    table: RwLock<Table<T>>,
    max_slots: usize,
}

/// Why [`Registry::insert`] failed.
#[derive(Debug, PartialEq, Eq)]
pub struct Full(pub usize);

fn encode(index: u32, generation: u32) -> usize {
    ((TAG << TAG_SHIFT) | (u64::from(index) << INDEX_SHIFT) | (u64::from(generation) << GEN_SHIFT)) as usize
}

/// (index, generation), or `None` when the value cannot be a handle.
fn decode(handle: usize) -> Option<(u32, u32)> {
    let h = handle as u64;
    if h >> TAG_SHIFT != TAG || h & ((1 << GEN_SHIFT) - 1) != 0 {
        return None;
    }
    let index = ((h >> INDEX_SHIFT) & ((1 << INDEX_BITS) - 1)) as u32;
    let generation = ((h >> GEN_SHIFT) & ((1 << GEN_BITS) - 1)) as u32;
    Some((index, generation))
}

impl<T> Registry<T> {
    pub const fn new() -> Self {
        Self::with_max_slots(MAX_SLOTS)
    }

    const fn with_max_slots(max_slots: usize) -> Self {
        Registry { table: RwLock::new(Table { slots: Vec::new(), free: VecDeque::new() }), max_slots }
    }

    fn read(&self) -> RwLockReadGuard<'_, Table<T>> {
        // No code that can panic runs while the table is changed half-way:
        // after a panic elsewhere (caught at the boundary) it is whole.
        self.table.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Table<T>> {
        self.table.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores `object`, returning its handle (never 0).
    pub fn insert(&self, object: T) -> Result<usize, Full> {
        let mut t = self.write();
        let index = match t.free.pop_front() {
            Some(i) => i,
            None if t.slots.len() < self.max_slots => {
                t.slots.push(Slot { generation: 0, object: None });
                (t.slots.len() - 1) as u32
            }
            None => return Err(Full(self.max_slots)),
        };
        let slot = &mut t.slots[index as usize];
        slot.object = Some(Arc::new(object));
        Ok(encode(index, slot.generation))
    }

    /// What `handle` refers to now.
    pub fn get(&self, handle: usize) -> Lookup<T> {
        if handle == 0 {
            return Lookup::Null;
        }
        let Some((index, generation)) = decode(handle) else { return Lookup::Foreign };
        let t = self.read();
        match t.slots.get(index as usize) {
            Some(slot) => match classify(slot, generation) {
                State::Live => Lookup::Live(slot.object.clone().expect("live")),
                State::Destroyed => Lookup::Destroyed,
                State::Foreign => Lookup::Foreign,
            },
            None => Lookup::Foreign,
        }
    }

    /// Takes the object out of the table; the handle is destroyed from now
    /// on. Returns the table's reference (drop it outside any lock of
    /// yours: a lookup that raced with this call may still hold another).
    pub fn remove(&self, handle: usize) -> Lookup<T> {
        if handle == 0 {
            return Lookup::Null;
        }
        let Some((index, generation)) = decode(handle) else { return Lookup::Foreign };
        let mut t = self.write();
        let Some(slot) = t.slots.get_mut(index as usize) else { return Lookup::Foreign };
        match classify(slot, generation) {
            State::Live => {}
            State::Destroyed => return Lookup::Destroyed,
            State::Foreign => return Lookup::Foreign,
        }
        let object = slot.object.take().expect("live");
        slot.generation += 1;
        if slot.generation < GEN_LIMIT {
            t.free.push_back(index);
        } // else: retired for good, its handles can never come back
        Lookup::Live(object)
    }

    /// Every live object with its handle, in slot order.
    pub fn live(&self) -> Vec<(usize, Arc<T>)> {
        let t = self.read();
        t.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.object.as_ref().map(|o| (encode(i as u32, s.generation), o.clone())))
            .collect()
    }

    /// True when `handle` names `object` now (not destroyed since).
    pub fn is_current(&self, handle: usize, object: &Arc<T>) -> bool {
        matches!(self.get(handle), Lookup::Live(o) if Arc::ptr_eq(&o, object))
    }

    /// Objects alive now.
    #[cfg(test)]
    pub fn live_count(&self) -> usize {
        self.read().slots.iter().filter(|s| s.object.is_some()).count()
    }
}

impl<T> Default for Registry<T> {
    fn default() -> Self {
        Self::new()
    }
}

enum State {
    Live,
    Destroyed,
    Foreign,
}

fn classify<T>(slot: &Slot<T>, generation: u32) -> State {
    if generation < slot.generation {
        State::Destroyed
    } else if generation == slot.generation && slot.object.is_some() {
        State::Live
    } else {
        // Not issued yet: made up by someone.
        State::Foreign
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_live<T: PartialEq + std::fmt::Debug>(l: Lookup<T>, want: T) -> bool {
        matches!(l, Lookup::Live(o) if *o == want)
    }

    #[test]
    fn destroyed_handle_stays_destroyed_after_its_slot_is_reused() {
        let r = Registry::new();
        let a = r.insert(1u32).unwrap();
        assert!(matches!(r.remove(a), Lookup::Live(_)));
        let b = r.insert(2u32).unwrap();
        // The same slot (what an allocator reusing the address would do),
        // a different handle.
        assert_eq!(decode(a).unwrap().0, decode(b).unwrap().0);
        assert_ne!(a, b);
        assert!(matches!(r.get(a), Lookup::Destroyed));
        assert!(matches!(r.remove(a), Lookup::Destroyed), "second destroy of a");
        assert!(is_live(r.get(b), 2), "b untouched by the stale handle");
        assert!(matches!(r.remove(b), Lookup::Live(_)));
        assert!(matches!(r.remove(b), Lookup::Destroyed));
        assert_eq!(r.live_count(), 0);
    }

    #[test]
    fn real_addresses_and_made_up_values_are_foreign() {
        let r = Registry::new();
        let a = r.insert(1u32).unwrap();
        let local = 5u64;
        let heap = Box::new(5u64);
        for bogus in [
            &local as *const u64 as usize,
            &*heap as *const u64 as usize,
            &r as *const _ as usize,
            a + 1,                           // misaligned
            a + (1 << GEN_SHIFT),            // a generation not issued yet
            a + (1 << INDEX_SHIFT),          // a slot that does not exist
            (a & !(0xffff << TAG_SHIFT)) | (0x7715 << TAG_SHIFT), // wrong tag
            usize::MAX,
        ] {
            assert!(matches!(r.get(bogus), Lookup::Foreign), "{bogus:#x}");
            assert!(matches!(r.remove(bogus), Lookup::Foreign), "{bogus:#x}");
        }
        assert!(matches!(r.get(0), Lookup::Null));
        assert!(is_live(r.get(a), 1));
        // Every handle is a non-canonical x86-64 address, 16-byte aligned.
        assert!(a >> 47 != 0 && a >> 47 != 0x1ffff);
        assert_eq!(a % 16, 0);
    }

    #[test]
    fn generations_spread_over_slots_and_exhausted_slots_retire() {
        let r = Registry::new();
        let a = r.insert(1u32).unwrap();
        let b = r.insert(2u32).unwrap();
        r.remove(a);
        r.remove(b);
        // Oldest destroy first: a's slot, then b's.
        let c = r.insert(3u32).unwrap();
        assert_eq!(decode(c).unwrap().0, decode(a).unwrap().0);

        // A slot at its last generation is not reused.
        let r = Registry::new();
        let h = r.insert(1u32).unwrap();
        r.write().slots[0].generation = GEN_LIMIT - 1;
        let last = encode(0, GEN_LIMIT - 1);
        r.write().slots[0].object = Some(Arc::new(9));
        assert!(matches!(r.remove(last), Lookup::Live(_)));
        assert!(matches!(r.get(h), Lookup::Destroyed));
        assert!(matches!(r.get(last), Lookup::Destroyed));
        let next = r.insert(4u32).unwrap();
        assert_eq!(decode(next).unwrap().0, 1, "slot 0 retired");
    }

    #[test]
    fn a_full_table_is_an_error_not_a_reuse() {
        let r = Registry::with_max_slots(2);
        let a = r.insert(1u32).unwrap();
        let _b = r.insert(2u32).unwrap();
        assert_eq!(r.insert(3u32).unwrap_err(), Full(2));
        r.remove(a);
        assert!(r.insert(3u32).is_ok());
    }

    #[test]
    fn a_lookup_keeps_its_object_alive_across_a_concurrent_destroy() {
        let r = Arc::new(Registry::new());
        let a = r.insert(vec![1u8; 64]).unwrap();
        let held = match r.get(a) {
            Lookup::Live(o) => o,
            _ => panic!("live"),
        };
        let r2 = r.clone();
        std::thread::spawn(move || drop(r2.remove(a))).join().unwrap();
        assert_eq!(held.len(), 64, "still readable: the table gave us our own reference");
        assert!(matches!(r.get(a), Lookup::Destroyed));
    }
}
