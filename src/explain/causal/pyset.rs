//! A set of small non-negative integers that iterates in exactly the order CPython 3's `set`
//! does (`Objects/setobject.c`: open addressing with linear probes and perturbation, dummy
//! slots, resizes).
//!
//! causality-lab's ordered ICD iterates Python sets of node ids in several places where the
//! order decides the result (the first separating set found, the order edges are oriented, the
//! shape of the possible-d-separation tree). Reproducing its output exactly therefore needs the
//! same iteration order, which this type provides for the operations the algorithm uses.

/// Linear probes tried before perturbing (CPython's `LINEAR_PROBES`).
const LINEAR_PROBES: usize = 9;
/// Shift applied to the perturbation on each round (CPython's `PERTURB_SHIFT`).
const PERTURB_SHIFT: u32 = 5;
/// Size of a fresh table (CPython's `PySet_MINSIZE`).
const MIN_SIZE: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Empty,
    Dummy,
    Key(usize),
}

/// An integer set with CPython's iteration order.
#[derive(Debug, Clone)]
pub struct PySet {
    table: Vec<Slot>,
    fill: usize,
    used: usize,
}

impl Default for PySet {
    fn default() -> Self {
        Self::new()
    }
}

impl PartialEq for PySet {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().all(|k| other.contains(k))
    }
}

impl FromIterator<usize> for PySet {
    /// `set(iterable)`: the items are added one by one, in order.
    fn from_iter<I: IntoIterator<Item = usize>>(iter: I) -> Self {
        let mut s = Self::new();
        for k in iter {
            s.add(k);
        }
        s
    }
}

impl PySet {
    /// An empty set (`set()`).
    pub fn new() -> Self {
        Self {
            table: vec![Slot::Empty; MIN_SIZE],
            fill: 0,
            used: 0,
        }
    }

    fn mask(&self) -> usize {
        self.table.len() - 1
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.used
    }

    /// Whether the set has no element.
    pub fn is_empty(&self) -> bool {
        self.used == 0
    }

    /// Elements in CPython's iteration order.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.table.iter().filter_map(|s| match s {
            Slot::Key(k) => Some(*k),
            _ => None,
        })
    }

    /// Elements in iteration order, collected.
    pub fn to_vec(&self) -> Vec<usize> {
        self.iter().collect()
    }

    /// Slot holding `key`, if present (CPython's `set_lookkey`).
    fn find(&self, key: usize) -> Option<usize> {
        let mask = self.mask();
        let mut perturb = key;
        let mut i = key & mask;
        loop {
            let probes = if i + LINEAR_PROBES <= mask {
                LINEAR_PROBES
            } else {
                0
            };
            for j in i..=i + probes {
                match self.table[j] {
                    Slot::Empty => return None,
                    Slot::Key(k) if k == key => return Some(j),
                    _ => {}
                }
            }
            perturb >>= PERTURB_SHIFT;
            i = (i.wrapping_mul(5).wrapping_add(1).wrapping_add(perturb)) & mask;
        }
    }

    /// Membership test.
    pub fn contains(&self, key: usize) -> bool {
        self.find(key).is_some()
    }

    /// `s.add(key)` (CPython's `set_add_entry`; the last dummy slot on the probe path is reused).
    pub fn add(&mut self, key: usize) {
        let mask = self.mask();
        let mut perturb = key;
        let mut i = key & mask;
        let mut freeslot: Option<usize> = None;
        let empty_at = 'outer: loop {
            let probes = if i + LINEAR_PROBES <= mask {
                LINEAR_PROBES
            } else {
                0
            };
            for j in i..=i + probes {
                match self.table[j] {
                    Slot::Empty => break 'outer j,
                    Slot::Key(k) if k == key => return,
                    // CPython 3.11 keeps the last dummy met before the empty slot.
                    Slot::Dummy => freeslot = Some(j),
                    Slot::Key(_) => {}
                }
            }
            perturb >>= PERTURB_SHIFT;
            i = (i.wrapping_mul(5).wrapping_add(1).wrapping_add(perturb)) & mask;
        };
        if let Some(f) = freeslot {
            self.table[f] = Slot::Key(key);
            self.used += 1;
            return;
        }
        self.table[empty_at] = Slot::Key(key);
        self.fill += 1;
        self.used += 1;
        if self.fill * 5 >= mask * 3 {
            self.resize(self.grow_target());
        }
    }

    fn grow_target(&self) -> usize {
        if self.used > 50000 {
            self.used * 2
        } else {
            self.used * 4
        }
    }

    /// `s.discard(key)`: the slot becomes a dummy.
    pub fn discard(&mut self, key: usize) -> bool {
        match self.find(key) {
            Some(j) => {
                self.table[j] = Slot::Dummy;
                self.used -= 1;
                true
            }
            None => false,
        }
    }

    /// CPython's `set_insert_clean` into a table without dummies.
    fn insert_clean(table: &mut [Slot], key: usize) {
        let mask = table.len() - 1;
        let mut perturb = key;
        let mut i = key & mask;
        loop {
            if table[i] == Slot::Empty {
                table[i] = Slot::Key(key);
                return;
            }
            if i + LINEAR_PROBES <= mask {
                if let Some(slot) = table[i + 1..=i + LINEAR_PROBES]
                    .iter_mut()
                    .find(|s| **s == Slot::Empty)
                {
                    *slot = Slot::Key(key);
                    return;
                }
            }
            perturb >>= PERTURB_SHIFT;
            i = (i.wrapping_mul(5).wrapping_add(1).wrapping_add(perturb)) & mask;
        }
    }

    /// CPython's `set_table_resize`: the smallest power of two above `minused`.
    fn resize(&mut self, minused: usize) {
        let mut newsize = MIN_SIZE;
        while newsize <= minused {
            newsize <<= 1;
        }
        let old = std::mem::replace(&mut self.table, vec![Slot::Empty; newsize]);
        for s in old {
            if let Slot::Key(k) = s {
                Self::insert_clean(&mut self.table, k);
            }
        }
        self.fill = self.used;
    }

    /// `s.update(other)` with a set argument (CPython's `set_merge`).
    pub fn update(&mut self, other: &PySet) {
        if other.used == 0 {
            return;
        }
        if (self.fill + other.used) * 5 >= self.mask() * 3 {
            self.resize((self.used + other.used) * 2);
        }
        if self.fill == 0 && self.mask() == other.mask() && other.fill == other.used {
            self.table.copy_from_slice(&other.table);
            self.fill = other.fill;
            self.used = other.used;
            return;
        }
        if self.fill == 0 {
            self.fill = other.used;
            self.used = other.used;
            for k in other.iter() {
                Self::insert_clean(&mut self.table, k);
            }
            return;
        }
        for k in other.iter() {
            self.add(k);
        }
    }

    /// `s.copy()` / `set(s)`.
    pub fn copy(&self) -> PySet {
        let mut s = PySet::new();
        s.update(self);
        s
    }

    /// `self & other` (CPython's `set_intersection`: iterates the smaller set).
    pub fn intersection(&self, other: &PySet) -> PySet {
        let (big, small) = if other.len() > self.len() {
            (other, self)
        } else {
            (self, other)
        };
        let mut out = PySet::new();
        for k in small.iter() {
            if big.contains(k) {
                out.add(k);
            }
        }
        out
    }

    /// `self - other` (CPython's `set_difference`).
    pub fn difference(&self, other: &PySet) -> PySet {
        if (self.len() >> 2) > other.len() {
            let mut out = self.copy();
            out.difference_update(other);
            return out;
        }
        let mut out = PySet::new();
        for k in self.iter() {
            if !other.contains(k) {
                out.add(k);
            }
        }
        out
    }

    /// `self - {a, b, ...}` with a set literal of the given items.
    pub fn minus(&self, items: &[usize]) -> PySet {
        self.difference(&items.iter().copied().collect())
    }

    /// `self.difference_update(other)` (CPython's `set_difference_update_internal`).
    pub fn difference_update(&mut self, other: &PySet) {
        if (other.len() >> 3) > self.len() {
            let common = self.intersection(other);
            for k in common.iter() {
                self.discard(k);
            }
        } else {
            for k in other.iter() {
                self.discard(k);
            }
        }
        if self.fill - self.used > self.mask() / 4 {
            self.resize(self.grow_target());
        }
    }

    /// `self | other`.
    pub fn union(&self, other: &PySet) -> PySet {
        let mut out = self.copy();
        out.update(other);
        out
    }

    /// `self.isdisjoint(other)`.
    pub fn is_disjoint(&self, other: &PySet) -> bool {
        self.iter().all(|k| !other.contains(k))
    }
}

/// `itertools.combinations(items, r)`: index combinations in lexicographic order.
pub fn combinations(items: &[usize], r: usize, mut f: impl FnMut(&[usize]) -> bool) {
    let n = items.len();
    if r > n {
        return;
    }
    let mut idx: Vec<usize> = (0..r).collect();
    let mut buf: Vec<usize> = idx.iter().map(|&i| items[i]).collect();
    loop {
        if !f(&buf) {
            return;
        }
        // the rightmost index that can still move
        let Some(i) = (0..r).rev().find(|&i| idx[i] != i + n - r) else {
            return;
        };
        idx[i] += 1;
        for j in i + 1..r {
            idx[j] = idx[j - 1] + 1;
        }
        for j in i..r {
            buf[j] = items[idx[j]];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[usize]) -> PySet {
        items.iter().copied().collect()
    }

    // Expected orders printed by CPython 3.11 for the same operations.
    #[test]
    fn iteration_order_matches_cpython() {
        assert_eq!(
            set(&[70, 5, 37, 69, 101, 6]).to_vec(),
            [101, 37, 69, 5, 70, 6]
        );
        let a = set(&[3, 35, 67, 99, 4, 8, 40]);
        assert_eq!(a.minus(&[35]).to_vec(), [3, 67, 99, 4, 8, 40]);
        assert_eq!(a.copy().to_vec(), [99, 35, 67, 3, 4, 8, 40]);
        let b = set(&[40, 8, 72, 3]);
        assert_eq!(a.intersection(&b).to_vec(), [40, 8, 3]);
        assert_eq!(b.intersection(&a).to_vec(), [40, 8, 3]);
        let x: PySet = (0..200).step_by(7).collect();
        assert_eq!(
            x.minus(&[14]).to_vec(),
            [
                0, 196, 133, 70, 7, 140, 77, 147, 84, 21, 154, 91, 28, 161, 98, 35, 168, 105, 42,
                175, 112, 49, 182, 119, 56, 189, 126, 63
            ]
        );
    }

    #[test]
    fn add_reuses_the_last_dummy_on_the_probe_path() {
        let mut s: PySet = (0..10).collect();
        for k in [1, 5, 7] {
            assert!(s.discard(k));
        }
        s.add(1);
        assert_eq!(s.to_vec(), [0, 2, 3, 4, 6, 1, 8, 9]);
        assert!(!s.discard(5));
        assert_eq!(s.len(), 8);
    }

    #[test]
    fn combinations_are_lexicographic_by_index() {
        let mut got = Vec::new();
        combinations(&[5, 1, 9], 2, |c| {
            got.push(c.to_vec());
            true
        });
        assert_eq!(got, [vec![5, 1], vec![5, 9], vec![1, 9]]);
        let mut n = 0;
        combinations(&[1, 2], 3, |_| {
            n += 1;
            true
        });
        assert_eq!(n, 0);
    }
}
