//! OpenBLAS, linked at build time when the system has it (see `build.rs`): the one CBLAS
//! entry point used for the large products, and its process-wide thread count.

#[cfg(not(openblas))]
pub use absent::*;
#[cfg(openblas)]
pub use linked::*;

#[cfg(openblas)]
mod linked {
    use std::os::raw::c_int;
    use std::sync::{Mutex, Once};

    pub const ROW_MAJOR: c_int = 101;
    pub const NO_TRANS: c_int = 111;
    pub const TRANS: c_int = 112;

    extern "C" {
        pub fn cblas_sgemm(
            layout: c_int,
            trans_a: c_int,
            trans_b: c_int,
            m: c_int,
            n: c_int,
            k: c_int,
            alpha: f32,
            a: *const f32,
            lda: c_int,
            b: *const f32,
            ldb: c_int,
            beta: f32,
            c: *mut f32,
            ldc: c_int,
        );
        fn openblas_set_num_threads(n: c_int);
    }

    /// (transpose flag, leading dimension) of a view, if BLAS can address it.
    pub fn operand(rs: isize, cs: isize) -> Option<(c_int, c_int)> {
        match (rs, cs) {
            (rs, 1) if rs >= 1 => Some((NO_TRANS, rs as c_int)),
            (1, cs) if cs >= 1 => Some((TRANS, cs as c_int)),
            _ => None,
        }
    }

    fn set_threads(n: usize) {
        // SAFETY: a plain setter in OpenBLAS.
        unsafe { openblas_set_num_threads(n as c_int) }
    }

    /// Gives OpenBLAS the engine's thread count, once.
    pub fn init() {
        static ONCE: Once = Once::new();
        ONCE.call_once(|| set_threads(crate::cpu::kernels::threads()));
    }

    /// Serial sections open in the process; OpenBLAS runs on one thread while any is.
    static SERIAL_SECTIONS: Mutex<usize> = Mutex::new(0);

    /// While alive, OpenBLAS runs every product on its calling thread. Its thread count is
    /// process-wide: a product started meanwhile from outside the section runs on one thread
    /// too (same result, less speed).
    pub struct SerialSection(());

    impl SerialSection {
        /// Opens a section (sections nest and may overlap across threads).
        pub fn enter() -> SerialSection {
            init();
            let mut open = SERIAL_SECTIONS.lock().unwrap_or_else(|e| e.into_inner());
            if *open == 0 {
                set_threads(1);
            }
            *open += 1;
            SerialSection(())
        }
    }

    impl Drop for SerialSection {
        fn drop(&mut self) {
            let mut open = SERIAL_SECTIONS.lock().unwrap_or_else(|e| e.into_inner());
            *open -= 1;
            if *open == 0 {
                set_threads(crate::cpu::kernels::threads());
            }
        }
    }
}

#[cfg(not(openblas))]
mod absent {
    /// Nothing to switch without OpenBLAS: the `gemm` crate is told per product.
    pub struct SerialSection(());

    impl SerialSection {
        /// Opens a section (a no-op).
        pub fn enter() -> SerialSection {
            SerialSection(())
        }
    }
}
