//! The WASI interfaces a policy plugin is granted, added to the linker one at a time with
//! each interface's generated `add_to_linker`.
//!
//! This list is what makes remembered answers sound (see [`super::memo`]): every interface
//! here either answers the same way on every call or is watched, and a component that
//! imports anything else (files, sockets, HTTP, ...) fails to load, naming the import. Add
//! an interface here only with the reason it keeps that promise.

use wasmtime::component::{HasData, Linker, ResourceTable};
use wasmtime_wasi::WasiView;
use wasmtime_wasi::cli::{WasiCli, WasiCliView};
use wasmtime_wasi::clocks::{WasiClocks, WasiClocksView};
use wasmtime_wasi::p2::bindings::{cli, clocks, io, random};
use wasmtime_wasi::random::{WasiRandom, WasiRandomView};

use super::clock::{BoundedClock, HasCallClock};

/// Names the resource table as the data of the `wasi:io` interfaces.
struct Table;

impl HasData for Table {
    type Data<'a> = &'a mut ResourceTable;
}

/// Adds the granted WASI interfaces to `linker`.
pub(crate) fn add_to_linker<T>(l: &mut Linker<T>) -> wasmtime::Result<()>
where
    T: WasiView + HasCallClock,
{
    // Streams (stdio) and pollables (sleeps): plumbing, no source of values of its own.
    io::error::add_to_linker::<T, Table>(l, |t| t.ctx().table)?;
    io::poll::add_to_linker::<T, Table>(l, |t| t.ctx().table)?;
    io::streams::add_to_linker::<T, Table>(l, |t| t.ctx().table)?;

    // An empty environment, no arguments, no initial directory, an empty stdin; stdout and
    // stderr are captured for the log; no terminals; `exit` ends the call. All the same on
    // every call.
    cli::environment::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::exit::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::stdin::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::stdout::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::stderr::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_input::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_output::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_stdin::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_stdout::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_stderr::add_to_linker::<T, WasiCli>(l, T::cli)?;

    // Watched: reading either clock marks the answer as not to be remembered. The wall clock
    // is WASI's with a watched source (`WatchedWallClock`); the monotonic clock is the
    // host's own (`CallClock`), which also bounds sleeps.
    clocks::wall_clock::add_to_linker::<T, WasiClocks>(l, T::clocks)?;
    clocks::monotonic_clock::add_to_linker::<T, BoundedClock>(l, T::call_clock)?;

    // Watched random numbers (`WatchedRng`), and a fixed insecure seed.
    random::random::add_to_linker::<T, WasiRandom>(l, T::random)?;
    random::insecure::add_to_linker::<T, WasiRandom>(l, T::random)?;
    random::insecure_seed::add_to_linker::<T, WasiRandom>(l, T::random)?;
    Ok(())
}
