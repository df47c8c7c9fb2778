//! The fair wait line of one pool: a FIFO per client (IP or token name), served round-robin
//! across clients, so a client with 100 queued requests delays another client's single request
//! by at most one turn. Waiters are found by id, so a cancelled one leaves at once.

use std::collections::{HashMap, VecDeque};

/// Waiters of type `T`, each with a unique id, grouped by client key.
#[derive(Debug)]
pub struct FairQueue<T> {
    /// Each client's own FIFO; only clients with at least one waiter are present.
    lines: HashMap<String, VecDeque<(u64, T)>>,
    /// Whose turn comes next: front first. Holds exactly the keys of `lines`.
    rotation: VecDeque<String>,
    /// Waiter id → client key.
    owner: HashMap<u64, String>,
}

impl<T> Default for FairQueue<T> {
    fn default() -> Self {
        Self {
            lines: HashMap::new(),
            rotation: VecDeque::new(),
            owner: HashMap::new(),
        }
    }
}

impl<T> FairQueue<T> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.owner.len()
    }

    pub fn is_empty(&self) -> bool {
        self.owner.is_empty()
    }

    /// Appends waiter `id` to `client`'s line; a client new to the queue gets the last turn.
    /// `id` must not be queued already.
    pub fn push(&mut self, client: &str, id: u64, item: T) {
        self.owner.insert(id, client.to_string());
        let line = self.lines.entry(client.to_string()).or_default();
        if line.is_empty() {
            self.rotation.push_back(client.to_string());
        }
        line.push_back((id, item));
    }

    /// The waiter whose turn it is, if any.
    pub fn pop(&mut self) -> Option<(u64, T)> {
        let first = self.order().next()?;
        self.take(first).map(|item| (first, item))
    }

    /// The waiter `id`, if queued.
    pub fn get(&self, id: u64) -> Option<&T> {
        let line = self.lines.get(self.owner.get(&id)?)?;
        line.iter().find(|(i, _)| *i == id).map(|(_, item)| item)
    }

    /// Serves waiter `id` (in turn or out of turn): it leaves, and its client's next waiter goes
    /// to the back of the rotation.
    pub fn take(&mut self, id: u64) -> Option<T> {
        let (client, item) = self.unlink(id)?;
        if let Some(at) = self.rotation.iter().position(|c| *c == client) {
            self.rotation.remove(at);
            if self.lines.contains_key(&client) {
                self.rotation.push_back(client);
            }
        }
        Some(item)
    }

    /// Removes waiter `id` without serving it (cancellation): its client keeps its turn.
    pub fn remove(&mut self, id: u64) -> Option<T> {
        let (client, item) = self.unlink(id)?;
        if !self.lines.contains_key(&client) {
            self.rotation.retain(|c| *c != client);
        }
        Some(item)
    }

    /// Removes every waiter.
    pub fn drain(&mut self) -> Vec<T> {
        self.rotation.clear();
        self.owner.clear();
        self.lines
            .drain()
            .flat_map(|(_, line)| line.into_iter().map(|(_, item)| item))
            .collect()
    }

    /// How many waiters would be served before `id` if nobody else arrived or left.
    pub fn position(&self, id: u64) -> Option<usize> {
        let client = self.owner.get(&id)?;
        let k = self.lines.get(client)?.iter().position(|(i, _)| *i == id)?;
        let mut before = k;
        let mut seen_own = false;
        for c in &self.rotation {
            if c == client {
                seen_own = true;
                continue;
            }
            let len = self.lines.get(c).map_or(0, VecDeque::len);
            // Clients ahead in the rotation are served k+1 times before our waiter, those
            // behind k times.
            before += len.min(if seen_own { k } else { k + 1 });
        }
        Some(before)
    }

    /// Waiter ids in the order they would be served.
    pub fn order(&self) -> impl Iterator<Item = u64> + '_ {
        let lines: Vec<&VecDeque<(u64, T)>> =
            self.rotation.iter().filter_map(|c| self.lines.get(c)).collect();
        let mut active: Vec<usize> = (0..lines.len()).collect();
        let mut round = 0;
        let mut pending: VecDeque<u64> = VecDeque::new();
        std::iter::from_fn(move || loop {
            if let Some(id) = pending.pop_front() {
                return Some(id);
            }
            if active.is_empty() {
                return None;
            }
            active.retain(|&i| lines[i].len() > round);
            pending.extend(active.iter().map(|&i| lines[i][round].0));
            round += 1;
        })
    }

    fn unlink(&mut self, id: u64) -> Option<(String, T)> {
        let client = self.owner.remove(&id)?;
        let line = self.lines.get_mut(&client)?;
        let at = line.iter().position(|(i, _)| *i == id)?;
        let (_, item) = line.remove(at)?;
        if line.is_empty() {
            self.lines.remove(&client);
        }
        Some((client, item))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(entries: &[(&str, u64)]) -> FairQueue<()> {
        let mut q = FairQueue::new();
        for (c, id) in entries {
            q.push(c, *id, ());
        }
        q
    }

    fn served(q: &mut FairQueue<()>) -> Vec<u64> {
        std::iter::from_fn(|| q.pop().map(|(id, _)| id)).collect()
    }

    #[test]
    fn round_robin_across_clients() {
        let mut q = queue(&[("a", 1), ("a", 2), ("a", 3), ("b", 4), ("c", 5), ("c", 6)]);
        assert_eq!(q.len(), 6);
        assert_eq!(q.order().collect::<Vec<_>>(), vec![1, 4, 5, 2, 6, 3]);
        assert_eq!(served(&mut q), vec![1, 4, 5, 2, 6, 3]);
        assert!(q.is_empty());
    }

    #[test]
    fn one_request_is_not_starved_by_a_hundred() {
        let mut q = FairQueue::new();
        for id in 0..100 {
            q.push("a", id, ());
        }
        q.push("b", 1000, ());
        assert_eq!(q.position(1000), Some(1));
        let first_two: Vec<u64> = (0..2).filter_map(|_| q.pop().map(|(id, _)| id)).collect();
        assert_eq!(first_two, vec![0, 1000]);
    }

    #[test]
    fn position_matches_service_order() {
        let q = queue(&[
            ("a", 1),
            ("a", 2),
            ("a", 3),
            ("b", 4),
            ("c", 5),
            ("c", 6),
            ("b", 7),
            ("d", 8),
        ]);
        for (pos, id) in q.order().enumerate() {
            assert_eq!(q.position(id), Some(pos), "waiter {id}");
        }
        assert_eq!(q.position(99), None);
    }

    #[test]
    fn cancellation_keeps_the_turn() {
        let mut q = queue(&[("a", 1), ("a", 2), ("b", 3), ("b", 4)]);
        assert!(q.remove(1).is_some());
        assert!(q.remove(1).is_none());
        assert_eq!(q.len(), 3);
        // a still goes first with its next waiter.
        assert_eq!(served(&mut q), vec![2, 3, 4]);
    }

    #[test]
    fn removing_a_clients_last_waiter_drops_the_client() {
        let mut q = queue(&[("a", 1), ("b", 2), ("c", 3)]);
        assert!(q.remove(2).is_some());
        assert_eq!(q.order().collect::<Vec<_>>(), vec![1, 3]);
        assert_eq!(q.position(3), Some(1));
    }

    #[test]
    fn serving_out_of_turn_sends_the_client_back() {
        let mut q = queue(&[("a", 1), ("a", 2), ("b", 3), ("b", 4), ("c", 5)]);
        assert!(q.take(3).is_some());
        assert_eq!(q.order().collect::<Vec<_>>(), vec![1, 5, 4, 2]);
        assert!(q.get(4).is_some());
        assert!(q.get(3).is_none());
    }

    #[test]
    fn drain_empties() {
        let mut q = queue(&[("a", 1), ("b", 2)]);
        assert_eq!(q.drain().len(), 2);
        assert!(q.is_empty());
        assert_eq!(q.order().count(), 0);
    }
}
