//! **Test fixture, not a sample.** An output filter (procwarden:filter@0.1.0) whose setting
//! `mode` picks how it misbehaves, for the host's containment tests:
//!
//! * `trap`: panics (a trap);
//! * `spin`: loops forever (stopped by its CPU budget);
//! * `hog`: allocates until its memory bound refuses;
//! * `remember`: returns the text of the *previous* call it served in this instance (or
//!   `fresh` on its first call): with a fresh instance per call it always says `fresh`, so
//!   it shows whether state can leak from one call (or chat) to the next;
//! * anything else: upper-cases the text and counts one redaction.
#![cfg(target_arch = "wasm32")]

use std::cell::RefCell;

wit_bindgen::generate!({
    world: "filter-plugin",
    path: "../../../wit/filter/v0.1.0",
});

use exports::procwarden::filter::filter::Guest;
use procwarden::filter::host;
use procwarden::filter::types::{Context, Filtered};

thread_local! {
    static PREVIOUS: RefCell<Option<String>> = const { RefCell::new(None) };
}

struct Faulty;

impl Guest for Faulty {
    fn on_output(text: String, _ctx: Context) -> Filtered {
        match host::config("mode").as_deref() {
            Some("trap") => panic!("the faulty filter traps on purpose"),
            Some("spin") => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            Some("hog") => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            Some("remember") => {
                let previous = PREVIOUS.with(|p| p.borrow_mut().replace(text));
                Filtered {
                    text: previous.unwrap_or_else(|| "fresh".into()),
                    redactions: 0,
                }
            }
            _ => Filtered {
                text: text.to_uppercase(),
                redactions: 1,
            },
        }
    }
}

export!(Faulty);
