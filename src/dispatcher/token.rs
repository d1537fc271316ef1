//! What the epoll event's `u64` carries: a token, never a raw fd.
//!
//! A connection's token is its slot index in the connection table (low 31
//! bits) and the slot's generation (high 32 bits). The generation is bumped
//! when the slot's connection closes, so an event that was already on its
//! way for a closed connection carries an old generation: the worker that
//! receives it finds the slot's generation moved on and drops the event,
//! never handing it to the connection that now lives in that slot, nor to
//! the new tenant of the same fd number.
//!
//! Bit 31 of the low half marks the dispatcher's own descriptors (the
//! listening sockets and the wake-up eventfd), which have no generation.

/// Marks a control token (listener or wake-up) in the low 32 bits.
const CONTROL: u32 = 1 << 31;
/// The wake-up eventfd's index among control tokens.
const WAKE_INDEX: u32 = CONTROL - 1;

/// The largest connection slot index a token can carry.
pub(crate) const MAX_SLOT: u32 = CONTROL - 1;

/// The decoded epoll event data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Token {
    /// A client connection in slot `slot`, opened in generation `generation`.
    Connection { slot: u32, generation: u32 },
    /// The listening socket at this index.
    Listener(u32),
    /// The pool's wake-up eventfd (resize, stop).
    Wake,
}

impl Token {
    pub(crate) fn to_u64(self) -> u64 {
        match self {
            Token::Connection { slot, generation } => {
                debug_assert!(slot <= MAX_SLOT);
                (u64::from(generation) << 32) | u64::from(slot)
            }
            Token::Listener(index) => {
                debug_assert!(index < WAKE_INDEX);
                u64::from(CONTROL | index)
            }
            Token::Wake => u64::from(CONTROL | WAKE_INDEX),
        }
    }

    pub(crate) fn from_u64(data: u64) -> Token {
        let low = data as u32;
        if low & CONTROL == 0 {
            Token::Connection {
                slot: low,
                generation: (data >> 32) as u32,
            }
        } else if low == CONTROL | WAKE_INDEX {
            Token::Wake
        } else {
            Token::Listener(low & !CONTROL)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for token in [
            Token::Connection {
                slot: 0,
                generation: 0,
            },
            Token::Connection {
                slot: MAX_SLOT,
                generation: u32::MAX,
            },
            Token::Connection {
                slot: 7,
                generation: 1,
            },
            Token::Listener(0),
            Token::Listener(3),
            Token::Wake,
        ] {
            assert_eq!(Token::from_u64(token.to_u64()), token);
        }
    }

    #[test]
    fn generations_make_distinct_tokens() {
        let old = Token::Connection {
            slot: 5,
            generation: 1,
        };
        let new = Token::Connection {
            slot: 5,
            generation: 2,
        };
        assert_ne!(old.to_u64(), new.to_u64());
    }
}
