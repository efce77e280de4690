//! A small loader for the BPF objects clang builds from bpf/*.c: reads the ELF
//! sections, creates the maps of the legacy "maps" section and patches map
//! references (ld_imm64 relocations) with map fds. No BTF, globals or
//! subprograms: the C sources avoid them.

use super::sys;
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::Arc;

/// A map as declared in the object (`struct xvs_map_def` in bpf/common.h).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapDef {
    pub name: String,
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub flags: u32,
}

/// A program section: its instructions and which instructions load which map.
#[derive(Debug, Clone)]
pub struct ProgDef {
    pub section: String,
    pub name: String,
    insns: Vec<u64>,
    relocs: Vec<(usize, String)>,
}

/// A parsed BPF object file.
#[derive(Debug, Clone)]
pub struct Object {
    pub maps: Vec<MapDef>,
    pub progs: Vec<ProgDef>,
    pub license: String,
}

/// A created map; shared between programs (and objects) through `Arc`.
#[derive(Debug)]
pub struct Map {
    fd: OwnedFd,
    pub def: MapDef,
}

impl Map {
    /// Creates a map from its definition.
    pub fn create(def: &MapDef) -> Result<Arc<Map>> {
        let fd = sys::map_create(
            &def.name,
            def.map_type,
            def.key_size,
            def.value_size,
            def.max_entries,
            def.flags,
        )?;
        Ok(Arc::new(Map {
            fd,
            def: def.clone(),
        }))
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn check_len(&self, what: &str, got: usize, want: usize) -> std::io::Result<()> {
        if got != want {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "map {}: {what} of {got} bytes, the map's is {want}",
                    self.def.name
                ),
            ));
        }
        Ok(())
    }

    fn is_percpu(&self) -> bool {
        matches!(
            self.def.map_type,
            sys::BPF_MAP_TYPE_PERCPU_ARRAY | sys::BPF_MAP_TYPE_PERCPU_HASH
        )
    }

    /// Bytes a lookup of this map writes: the value size, or for per-CPU maps
    /// one 8-byte-aligned value per possible CPU.
    pub fn lookup_len(&self) -> std::io::Result<usize> {
        let v = self.def.value_size as usize;
        if self.is_percpu() {
            let ncpu =
                crate::sys::possible_cpus().map_err(|e| std::io::Error::other(e.to_string()))?;
            Ok(v.div_ceil(8) * 8 * ncpu)
        } else {
            Ok(v)
        }
    }

    /// Sets `key` to `value` (exactly the map's key and value sizes; per-CPU
    /// maps are not written from here).
    pub fn update(&self, key: &[u8], value: &[u8], flags: u64) -> std::io::Result<()> {
        self.check_len("key", key.len(), self.def.key_size as usize)?;
        self.check_len("value", value.len(), self.def.value_size as usize)?;
        if self.is_percpu() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("map {}: per-CPU maps are read-only here", self.def.name),
            ));
        }
        // SAFETY: both slices have exactly the sizes the kernel reads.
        unsafe { sys::map_update(self, key, value, flags) }
    }

    /// Deletes `key`; ENOENT when absent.
    pub fn delete(&self, key: &[u8]) -> std::io::Result<()> {
        self.check_len("key", key.len(), self.def.key_size as usize)?;
        // SAFETY: the key has exactly the size the kernel reads.
        unsafe { sys::map_delete(self, key) }
    }

    /// Reads `key` into `value`, whose length must be [`Map::lookup_len`].
    pub fn lookup(&self, key: &[u8], value: &mut [u8]) -> std::io::Result<()> {
        self.check_len("key", key.len(), self.def.key_size as usize)?;
        self.check_len("value buffer", value.len(), self.lookup_len()?)?;
        // SAFETY: the key and the buffer have exactly the sizes the kernel
        // reads and writes.
        unsafe { sys::map_lookup(self, key, value) }
    }

    /// The key after `key` (the first when None) into `next`; ENOENT at the end.
    pub fn next_key(&self, key: Option<&[u8]>, next: &mut [u8]) -> std::io::Result<()> {
        let ks = self.def.key_size as usize;
        if let Some(k) = key {
            self.check_len("key", k.len(), ks)?;
        }
        self.check_len("key buffer", next.len(), ks)?;
        // SAFETY: every buffer has exactly the map's key size.
        unsafe { sys::map_next_key(self, key, next) }
    }
}

impl AsFd for Map {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Map {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn bytes(&self, off: u64, len: u64) -> Result<&[u8]> {
        let (off, len) = (off as usize, len as usize);
        self.0
            .get(
                off..off
                    .checked_add(len)
                    .ok_or_else(|| Error::Elf("offset overflow".into()))?,
            )
            .ok_or_else(|| Error::Elf(format!("read of {len} bytes at {off} past the end")))
    }
    fn u16(&self, off: u64) -> Result<u16> {
        Ok(u16::from_le_bytes(self.bytes(off, 2)?.try_into().unwrap()))
    }
    fn u32(&self, off: u64) -> Result<u32> {
        Ok(u32::from_le_bytes(self.bytes(off, 4)?.try_into().unwrap()))
    }
    fn u64(&self, off: u64) -> Result<u64> {
        Ok(u64::from_le_bytes(self.bytes(off, 8)?.try_into().unwrap()))
    }
}

struct Section {
    name: String,
    ty: u32,
    flags: u64,
    offset: u64,
    size: u64,
    link: u32,
    info: u32,
}

const SHT_SYMTAB: u32 = 2;
const SHT_REL: u32 = 9;
const SHF_EXECINSTR: u64 = 4;
const R_BPF_64_64: u32 = 1;
const BPF_PSEUDO_MAP_FD: u8 = 1;

fn cstr(b: &[u8], off: usize) -> String {
    let s = b.get(off..).unwrap_or(&[]);
    let end = s.iter().position(|&c| c == 0).unwrap_or(s.len());
    String::from_utf8_lossy(&s[..end]).into_owned()
}

impl Object {
    /// Parses a little-endian ELF64 BPF object.
    pub fn parse(data: &[u8]) -> Result<Object> {
        let r = Reader(data);
        if r.bytes(0, 4)? != b"\x7fELF" || r.bytes(4, 2)? != [2, 1] {
            return Err(Error::Elf("not a little-endian ELF64 file".into()));
        }
        let shoff = r.u64(0x28)?;
        let shentsize = r.u16(0x3a)? as u64;
        let shnum = r.u16(0x3c)? as u64;
        let shstrndx = r.u16(0x3e)? as u64;
        let mut raw = Vec::new();
        for i in 0..shnum {
            let b = shoff + i * shentsize;
            raw.push((
                r.u32(b)?,
                Section {
                    name: String::new(),
                    ty: r.u32(b + 4)?,
                    flags: r.u64(b + 8)?,
                    offset: r.u64(b + 24)?,
                    size: r.u64(b + 32)?,
                    link: r.u32(b + 40)?,
                    info: r.u32(b + 44)?,
                },
            ));
        }
        let strtab = {
            let s = &raw
                .get(shstrndx as usize)
                .ok_or_else(|| Error::Elf("no section name table".into()))?
                .1;
            r.bytes(s.offset, s.size)?.to_vec()
        };
        let secs: Vec<Section> = raw
            .into_iter()
            .map(|(n, mut s)| {
                s.name = cstr(&strtab, n as usize);
                s
            })
            .collect();
        let data_of = |s: &Section| r.bytes(s.offset, s.size);

        // Symbols: (name, section index, value).
        let symtab = secs
            .iter()
            .find(|s| s.ty == SHT_SYMTAB)
            .ok_or_else(|| Error::Elf("no symbol table".into()))?;
        let symstr = data_of(
            secs.get(symtab.link as usize)
                .ok_or_else(|| Error::Elf("bad symtab link".into()))?,
        )?;
        let mut syms = Vec::new();
        for i in 0..symtab.size / 24 {
            let b = symtab.offset + i * 24;
            let name = cstr(symstr, r.u32(b)? as usize);
            let info = r.bytes(b + 4, 1)?[0];
            syms.push((name, r.u16(b + 6)? as usize, r.u64(b + 8)?, info & 0xf));
        }

        let maps_idx = secs.iter().position(|s| s.name == "maps");
        let mut maps = Vec::new();
        let mut map_at: HashMap<u64, String> = HashMap::new();
        if let Some(mi) = maps_idx {
            let md = data_of(&secs[mi])?;
            for (name, shndx, value, _) in &syms {
                if *shndx != mi || name.is_empty() {
                    continue;
                }
                let f = |k: u64| -> Result<u32> {
                    md.get((value + k * 4) as usize..(value + k * 4 + 4) as usize)
                        .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
                        .ok_or_else(|| Error::Elf(format!("map {name} outside the maps section")))
                };
                maps.push(MapDef {
                    name: name.clone(),
                    map_type: f(0)?,
                    key_size: f(1)?,
                    value_size: f(2)?,
                    max_entries: f(3)?,
                    flags: f(4)?,
                });
                map_at.insert(*value, name.clone());
            }
        }

        let mut progs = Vec::new();
        for (i, s) in secs.iter().enumerate() {
            if s.flags & SHF_EXECINSTR == 0 || s.size == 0 {
                continue;
            }
            if s.name == ".text" {
                return Err(Error::Elf(
                    "subprograms in .text are not supported (use __always_inline)".into(),
                ));
            }
            let code = data_of(s)?;
            let insns: Vec<u64> = code
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
                .collect();
            let name = syms
                .iter()
                .find(|(n, shndx, _, ty)| *shndx == i && *ty == 2 && !n.is_empty())
                .map(|(n, ..)| n.clone())
                .unwrap_or_else(|| s.name.clone());
            let mut relocs = Vec::new();
            for rs in secs
                .iter()
                .filter(|x| x.ty == SHT_REL && x.info as usize == i)
            {
                for k in 0..rs.size / 16 {
                    let b = rs.offset + k * 16;
                    let off = r.u64(b)?;
                    let info = r.u64(b + 8)?;
                    let (sym, ty) = ((info >> 32) as usize, info as u32);
                    let (sname, shndx, value, _) = syms
                        .get(sym)
                        .ok_or_else(|| Error::Elf("bad relocation symbol".into()))?;
                    if ty != R_BPF_64_64 || Some(*shndx) != maps_idx {
                        return Err(Error::Elf(format!(
                            "relocation in {} against {sname:?} (type {ty}): only map references are supported (no globals, no calls)",
                            s.name
                        )));
                    }
                    let map = map_at
                        .get(value)
                        .ok_or_else(|| Error::Elf(format!("no map at offset {value}")))?;
                    let idx = (off / 8) as usize;
                    if idx + 1 >= insns.len() || insns[idx] & 0xff != 0x18 {
                        return Err(Error::Elf(format!(
                            "relocation at {off} in {} is not an ld_imm64",
                            s.name
                        )));
                    }
                    relocs.push((idx, map.clone()));
                }
            }
            progs.push(ProgDef {
                section: s.name.clone(),
                name,
                insns,
                relocs,
            });
        }
        let license = secs
            .iter()
            .find(|s| s.name == "license")
            .map(|s| data_of(s).map(|d| cstr(d, 0)))
            .transpose()?
            .unwrap_or_default();
        Ok(Object {
            maps,
            progs,
            license,
        })
    }

    /// The definition of map `name`.
    pub fn map(&self, name: &str) -> Result<&MapDef> {
        self.maps
            .iter()
            .find(|m| m.name == name)
            .ok_or_else(|| Error::Elf(format!("no map named {name}")))
    }

    /// Loads the program of section `section`, with its map references bound
    /// to `maps` (every map the program uses must be there).
    pub fn load(
        &self,
        section: &str,
        prog_type: u32,
        attach_type: u32,
        maps: &[&Arc<Map>],
    ) -> Result<OwnedFd> {
        self.load_with_flags(section, prog_type, attach_type, 0, maps)
    }

    /// As [`Object::load`], with BPF_PROG_LOAD `prog_flags` (e.g.
    /// [`sys::BPF_F_XDP_HAS_FRAGS`]).
    pub fn load_with_flags(
        &self,
        section: &str,
        prog_type: u32,
        attach_type: u32,
        prog_flags: u32,
        maps: &[&Arc<Map>],
    ) -> Result<OwnedFd> {
        let p = self
            .progs
            .iter()
            .find(|p| p.section == section)
            .ok_or_else(|| Error::Elf(format!("no program section {section}")))?;
        let mut insns = p.insns.clone();
        for (idx, name) in &p.relocs {
            let m = maps.iter().find(|m| &m.def.name == name).ok_or_else(|| {
                Error::Elf(format!(
                    "program {} uses map {name}, which was not given",
                    p.name
                ))
            })?;
            // ld_imm64: byte 1 holds dst (low nibble) and src (high nibble);
            // src = BPF_PSEUDO_MAP_FD, imm (high 32 bits) = the fd.
            let mut b = insns[*idx].to_le_bytes();
            b[1] = (b[1] & 0x0f) | (BPF_PSEUDO_MAP_FD << 4);
            b[4..8].copy_from_slice(&m.fd().to_le_bytes());
            insns[*idx] = u64::from_le_bytes(b);
        }
        sys::prog_load(
            &p.name,
            prog_type,
            attach_type,
            prog_flags,
            &insns,
            &self.license,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steer_object_has_its_maps_and_programs() {
        let o = Object::parse(crate::bpf::STEER_OBJ).unwrap();
        let keys = o.map("xvs_keys").unwrap();
        assert_eq!(
            (keys.map_type, keys.key_size, keys.value_size),
            (sys::BPF_MAP_TYPE_HASH, 20, 4)
        );
        assert_eq!(
            o.map("xvs_xsks").unwrap().map_type,
            sys::BPF_MAP_TYPE_XSKMAP
        );
        let secs: Vec<&str> = o.progs.iter().map(|p| p.section.as_str()).collect();
        assert_eq!(secs, ["xdp", "socket", "tcx/ingress"]);
        assert_eq!(o.license, "GPL");
        assert!(o.progs.iter().all(|p| !p.relocs.is_empty()));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(Object::parse(b"").is_err());
        assert!(Object::parse(&[0x7f, b'E', b'L', b'F', 2, 1, 0, 0]).is_err());
        let mut o = crate::bpf::STEER_OBJ.to_vec();
        o.truncate(o.len() / 2);
        let _ = Object::parse(&o);
    }
}
