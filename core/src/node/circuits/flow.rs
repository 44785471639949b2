//! Flow control, one rule for both ends of a circuit.
//!
//! Each end may have at most [`CircuitParams::window_cells`] data cells that
//! the other end has not acknowledged; the receiver sends a `SENDME` (an
//! authenticated relay message, so no middle hop can forge one) for every
//! [`CircuitParams::sendme_every`] data cells it takes. A slow reader
//! therefore holds at most one window of cells in flight on its circuit,
//! whatever the sender does, and other circuits on the same links keep
//! moving. Relays in the middle hold no per-circuit buffer: a cell is passed
//! on as it arrives.

use super::SendError;
use crate::path::CircuitParams;

/// One end's window: credit to send, and cells taken since the last SENDME.
#[derive(Debug, Clone, Copy)]
pub(super) struct Window {
    package: u32,
    delivered: u32,
}

impl Window {
    /// A full window.
    pub(super) fn new(p: &CircuitParams) -> Window {
        Window {
            package: p.window_cells,
            delivered: 0,
        }
    }

    /// Takes one cell's credit to send data.
    pub(super) fn take(&mut self) -> Result<(), SendError> {
        if self.package == 0 {
            return Err(SendError::NoCredit);
        }
        self.package -= 1;
        Ok(())
    }

    /// A data cell arrived; true if a SENDME is due.
    pub(super) fn delivered(&mut self, p: &CircuitParams) -> bool {
        self.delivered += 1;
        self.delivered.is_multiple_of(p.sendme_every)
    }

    /// A SENDME arrived: credit comes back, never beyond a window.
    pub(super) fn sendme(&mut self, p: &CircuitParams) {
        self.package = (self.package + p.sendme_every).min(p.window_cells);
    }

    /// Credit left.
    pub(super) fn credit(&self) -> u32 {
        self.package
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credit_runs_out_and_sendmes_restore_at_most_a_window() {
        let p = CircuitParams::TESTNET;
        let mut w = Window::new(&p);
        for _ in 0..p.window_cells {
            w.take().unwrap();
        }
        assert_eq!(w.take(), Err(SendError::NoCredit));
        w.sendme(&p);
        assert_eq!(w.credit(), p.sendme_every);
        for _ in 0..10 * p.window_cells {
            w.sendme(&p);
        }
        assert_eq!(w.credit(), p.window_cells, "a flood of SENDMEs is capped");
        let acks = (0..2 * p.sendme_every).filter(|_| w.delivered(&p)).count();
        assert_eq!(acks, 2, "one SENDME per sendme_every cells");
    }
}
