//! Components precompiled once: the machine code for a component is kept under the server's
//! data directory, named by the sha256 of the `.wasm` and the engine's compatibility hash, so a
//! restart or a reload of an unchanged plugin loads in a millisecond instead of compiling.
//! Only files this module wrote are ever loaded (deserialising machine code is trusted input).

use std::{
    hash::{Hash, Hasher},
    path::{Path, PathBuf},
};

use sha2::{Digest, Sha256};
use wasmtime::{Engine, component::Component};

/// A component's bytes, compiled (or loaded from the cache), and its content hash.
pub(crate) struct Compiled {
    pub component: Component,
    pub sha256: String,
}

/// Compiles `wasm`, or loads its earlier compilation from `dir`.
pub(crate) fn compile(engine: &Engine, dir: &Path, wasm: &[u8]) -> Result<Compiled, String> {
    let sha256 = hex(&Sha256::digest(wasm));
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    let file = dir.join(format!("{sha256}-{:016x}.cwasm", hasher.finish()));
    if file.exists() {
        match load(engine, &file) {
            Ok(component) => return Ok(Compiled { component, sha256 }),
            Err(err) => {
                tracing::warn!(file = %file.display(), error = %err, "discarding a cached plugin build")
            }
        }
    }
    let bytes = engine.precompile_component(wasm).map_err(|e| format!("not a valid component: {e:#}"))?;
    if let Err(err) = store(dir, &file, &bytes) {
        tracing::warn!(dir = %dir.display(), error = %err, "cannot cache a plugin build");
        let component = Component::new(engine, wasm).map_err(|e| format!("not a valid component: {e:#}"))?;
        return Ok(Compiled { component, sha256 });
    }
    let component = load(engine, &file).map_err(|e| format!("cannot load the compiled component: {e:#}"))?;
    Ok(Compiled { component, sha256 })
}

/// Writes through a temporary file and a rename, so a crash never leaves half a file under
/// the final name.
fn store(dir: &Path, file: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let unique = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp: PathBuf = file.with_extension(format!("tmp{}-{unique}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, file)
}

#[allow(unsafe_code)]
fn load(engine: &Engine, file: &Path) -> wasmtime::Result<Component> {
    // SAFETY: the file was produced by `Engine::precompile_component` of an engine with the
    // same compatibility hash (it is in the name) and written by `store` into the server's own
    // data directory; nothing else writes there.
    unsafe { Component::deserialize_file(engine, file) }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
