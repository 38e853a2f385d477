//! Reading a PV guest image: an ELF64 executable with Xen's ELF notes
//! (spec §7.8). Every offset and size comes from the untrusted image, so
//! every read is bounds-checked and every sum checked; a malformed image
//! gives an [`ImageError`] naming the reason, never a panic.

use alloc::vec::Vec;

/// XEN_ELFNOTE_ENTRY.
const NOTE_ENTRY: u32 = 1;
/// XEN_ELFNOTE_HYPERCALL_PAGE.
const NOTE_HYPERCALL_PAGE: u32 = 2;
/// XEN_ELFNOTE_VIRT_BASE.
const NOTE_VIRT_BASE: u32 = 3;
/// XEN_ELFNOTE_PADDR_OFFSET.
const NOTE_PADDR_OFFSET: u32 = 4;
/// XEN_ELFNOTE_XEN_VERSION.
const NOTE_XEN_VERSION: u32 = 5;
/// XEN_ELFNOTE_GUEST_OS.
const NOTE_GUEST_OS: u32 = 6;
/// XEN_ELFNOTE_LOADER.
const NOTE_LOADER: u32 = 8;

const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
const EM_X86_64: u16 = 62;
const ET_EXEC: u16 = 2;
/// Most PT_LOAD segments accepted.
const MAX_SEGMENTS: usize = 16;

/// Why an image cannot be loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageError {
    /// Shorter than an ELF header, or not `\x7fELF`.
    NotElf,
    /// Not a 64-bit little-endian x86_64 executable.
    WrongKind,
    /// The program header table lies outside the file or has a wrong entry size.
    BadProgramHeaders,
    /// A segment's file range lies outside the file, or filesz > memsz, or its
    /// address range overflows.
    BadSegment,
    /// No PT_LOAD segment, or more than Sluice accepts.
    SegmentCount,
    /// A Xen note is truncated or misaligned.
    BadNote,
    /// No XEN_VERSION note starting "xen-3.0", or neither LOADER "generic"
    /// nor GUEST_OS "linux": Xen would not load it either.
    NotXenPv,
    /// The entry point or hypercall page is outside the loaded image, or the
    /// hypercall page is not page aligned.
    BadAddress,
}

impl core::fmt::Display for ImageError {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        formatter.write_str(match self {
            Self::NotElf => "not an ELF file",
            Self::WrongKind => "not a 64-bit little-endian x86_64 ELF executable",
            Self::BadProgramHeaders => "program header table out of bounds or malformed",
            Self::BadSegment => "a PT_LOAD segment is out of bounds or malformed",
            Self::SegmentCount => "no PT_LOAD segment, or too many",
            Self::BadNote => "a Xen ELF note is truncated or misaligned",
            Self::NotXenPv => {
                "no Xen PV notes (XEN_VERSION \"xen-3.0\" with LOADER \"generic\" or GUEST_OS \"linux\")"
            }
            Self::BadAddress => {
                "entry point or hypercall page outside the image (or hypercall page unaligned)"
            }
        })
    }
}

/// One loadable segment, at its guest virtual address.
#[derive(Clone, Copy, Debug)]
pub struct Segment {
    /// Guest virtual address of its first byte.
    pub virt: u64,
    /// Where its bytes start in the file.
    pub file_offset: usize,
    /// Bytes taken from the file.
    pub file_size: usize,
    /// Bytes in memory (the rest zero).
    pub memory_size: u64,
}

/// What the builder needs from an image.
#[derive(Clone, Debug)]
pub struct GuestImage {
    /// Entry point (XEN_ELFNOTE_ENTRY, else e_entry).
    pub entry: u64,
    /// The hypercall page, if the image names one.
    pub hypercall_page: Option<u64>,
    /// XEN_ELFNOTE_VIRT_BASE (0 if absent).
    pub virt_base: u64,
    /// Loadable segments.
    pub segments: Vec<Segment>,
    /// Lowest virtual address loaded.
    pub virt_start: u64,
    /// One past the highest virtual address loaded.
    pub virt_end: u64,
}

fn bytes(image: &[u8], offset: usize, length: usize) -> Option<&[u8]> {
    image.get(offset..offset.checked_add(length)?)
}

fn u16_at(image: &[u8], offset: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        bytes(image, offset, 2)?.try_into().ok()?,
    ))
}

fn u32_at(image: &[u8], offset: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        bytes(image, offset, 4)?.try_into().ok()?,
    ))
}

fn u64_at(image: &[u8], offset: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        bytes(image, offset, 8)?.try_into().ok()?,
    ))
}

fn to_usize(value: u64) -> Option<usize> {
    usize::try_from(value).ok()
}

/// The Xen notes found, before interpretation.
#[derive(Default)]
struct Notes {
    entry: Option<u64>,
    hypercall_page: Option<u64>,
    virt_base: Option<u64>,
    paddr_offset: Option<u64>,
    has_xen_version: bool,
    has_loader: bool,
}

fn note_number(desc: &[u8]) -> Option<u64> {
    match desc.len() {
        4 => Some(u64::from(u32::from_le_bytes(desc.try_into().ok()?))),
        8 => Some(u64::from_le_bytes(desc.try_into().ok()?)),
        _ => None,
    }
}

fn parse_notes(segment: &[u8], notes: &mut Notes) -> Result<(), ImageError> {
    let mut offset = 0usize;
    while offset < segment.len() {
        let name_size = u32_at(segment, offset).ok_or(ImageError::BadNote)? as usize;
        let desc_size = u32_at(segment, offset + 4).ok_or(ImageError::BadNote)? as usize;
        let kind = u32_at(segment, offset + 8).ok_or(ImageError::BadNote)?;
        let name_start = offset.checked_add(12).ok_or(ImageError::BadNote)?;
        let desc_start = name_start
            .checked_add(
                name_size
                    .checked_next_multiple_of(4)
                    .ok_or(ImageError::BadNote)?,
            )
            .ok_or(ImageError::BadNote)?;
        let next = desc_start
            .checked_add(
                desc_size
                    .checked_next_multiple_of(4)
                    .ok_or(ImageError::BadNote)?,
            )
            .ok_or(ImageError::BadNote)?;
        let name = bytes(segment, name_start, name_size).ok_or(ImageError::BadNote)?;
        let desc = bytes(segment, desc_start, desc_size).ok_or(ImageError::BadNote)?;
        if name == b"Xen\0" {
            let text = desc.split(|&byte| byte == 0).next().unwrap_or(&[]);
            match kind {
                NOTE_ENTRY => notes.entry = Some(note_number(desc).ok_or(ImageError::BadNote)?),
                NOTE_HYPERCALL_PAGE => {
                    notes.hypercall_page = Some(note_number(desc).ok_or(ImageError::BadNote)?);
                }
                NOTE_VIRT_BASE => {
                    notes.virt_base = Some(note_number(desc).ok_or(ImageError::BadNote)?);
                }
                NOTE_PADDR_OFFSET => {
                    notes.paddr_offset = Some(note_number(desc).ok_or(ImageError::BadNote)?);
                }
                NOTE_XEN_VERSION => notes.has_xen_version |= text.starts_with(b"xen-3.0"),
                NOTE_LOADER => notes.has_loader |= text.starts_with(b"generic"),
                NOTE_GUEST_OS => notes.has_loader |= text.starts_with(b"linux"),
                _ => {}
            }
        }
        offset = next;
    }
    Ok(())
}

/// Parses and checks `image`.
pub fn parse(image: &[u8]) -> Result<GuestImage, ImageError> {
    if image.get(0..4) != Some(b"\x7fELF".as_slice()) || image.len() < 64 {
        return Err(ImageError::NotElf);
    }
    // EI_CLASS 2 (64-bit), EI_DATA 1 (little endian).
    if image.get(4) != Some(&2) || image.get(5) != Some(&1) {
        return Err(ImageError::WrongKind);
    }
    let kind = u16_at(image, 16).ok_or(ImageError::NotElf)?;
    let machine = u16_at(image, 18).ok_or(ImageError::NotElf)?;
    if kind != ET_EXEC || machine != EM_X86_64 {
        return Err(ImageError::WrongKind);
    }
    let elf_entry = u64_at(image, 24).ok_or(ImageError::NotElf)?;
    let ph_offset = to_usize(u64_at(image, 32).ok_or(ImageError::NotElf)?)
        .ok_or(ImageError::BadProgramHeaders)?;
    let ph_entry_size = usize::from(u16_at(image, 54).ok_or(ImageError::NotElf)?);
    let ph_count = usize::from(u16_at(image, 56).ok_or(ImageError::NotElf)?);
    if ph_entry_size != 56 {
        return Err(ImageError::BadProgramHeaders);
    }
    let table_size = ph_count
        .checked_mul(ph_entry_size)
        .ok_or(ImageError::BadProgramHeaders)?;
    bytes(image, ph_offset, table_size).ok_or(ImageError::BadProgramHeaders)?;

    let mut notes = Notes::default();
    let mut raw_segments = Vec::new();
    for index in 0..ph_count {
        let header = ph_offset + index * ph_entry_size;
        let field =
            |offset: usize| u64_at(image, header + offset).ok_or(ImageError::BadProgramHeaders);
        let segment_kind = u32_at(image, header).ok_or(ImageError::BadProgramHeaders)?;
        let file_offset = to_usize(field(8)?).ok_or(ImageError::BadSegment)?;
        let paddr = field(24)?;
        let file_size = to_usize(field(32)?).ok_or(ImageError::BadSegment)?;
        let memory_size = field(40)?;
        let contents = bytes(image, file_offset, file_size).ok_or(ImageError::BadSegment)?;
        match segment_kind {
            PT_LOAD => {
                if file_size as u64 > memory_size || paddr.checked_add(memory_size).is_none() {
                    return Err(ImageError::BadSegment);
                }
                if raw_segments.len() == MAX_SEGMENTS {
                    return Err(ImageError::SegmentCount);
                }
                raw_segments.push((paddr, file_offset, file_size, memory_size));
            }
            PT_NOTE => parse_notes(contents, &mut notes)?,
            _ => {}
        }
    }
    if !notes.has_xen_version || !notes.has_loader {
        return Err(ImageError::NotXenPv);
    }
    if raw_segments.is_empty() {
        return Err(ImageError::SegmentCount);
    }
    // Xen's rule: virtual = paddr - PADDR_OFFSET + VIRT_BASE.
    let virt_base = notes.virt_base.unwrap_or(0);
    let paddr_offset = notes.paddr_offset.unwrap_or(0);
    let mut segments = Vec::with_capacity(raw_segments.len());
    for (paddr, file_offset, file_size, memory_size) in raw_segments {
        let virt = paddr
            .checked_sub(paddr_offset)
            .and_then(|offset| offset.checked_add(virt_base))
            .ok_or(ImageError::BadSegment)?;
        virt.checked_add(memory_size)
            .ok_or(ImageError::BadSegment)?;
        segments.push(Segment {
            virt,
            file_offset,
            file_size,
            memory_size,
        });
    }
    let virt_start = segments.iter().map(|s| s.virt).min().unwrap_or(0);
    let virt_end = segments
        .iter()
        .map(|s| s.virt + s.memory_size)
        .max()
        .unwrap_or(0);
    let entry = notes.entry.unwrap_or(elf_entry);
    let is_inside = |address: u64| (virt_start..virt_end).contains(&address);
    if !is_inside(entry) {
        return Err(ImageError::BadAddress);
    }
    if let Some(page) = notes.hypercall_page
        && (!page.is_multiple_of(4096) || !is_inside(page) || page + 4096 > virt_end)
    {
        return Err(ImageError::BadAddress);
    }
    Ok(GuestImage {
        entry,
        hypercall_page: notes.hypercall_page,
        virt_base,
        segments,
        virt_start,
        virt_end,
    })
}
