//! An enrollment link as a QR code: drawn on a terminal in Unicode half blocks, or written
//! to a PNG file readable by its owner alone (the link holds a one-time code). Both draw the
//! quiet zone the standard asks for, black modules on white.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use qrcode::{Color, EcLevel, QrCode};

/// Modules of light margin around a QR code: the four the standard asks for, without which
/// a camera may not find the code on a dark terminal or a busy page.
pub const QUIET_ZONE: usize = 4;
/// Pixels per module in the PNG: a version-9 code (a long link) is 424 pixels wide, sharp
/// on screen and when printed.
pub const PNG_MODULE_PIXELS: usize = 8;

/// A text as a QR code, with error correction level M (15 %): a code printed or shown on a
/// screen, not worn.
pub struct Qr {
    code: QrCode,
}

/// Why a QR code could not be made or written. The messages name the file, never the link.
#[derive(Debug, thiserror::Error)]
pub enum QrError {
    #[error("the link does not fit in a QR code ({0}); give it as text")]
    TooLong(String),
    #[error("{0} exists; name a new file for the QR code (an existing one is never written over)")]
    Exists(PathBuf),
    #[error("cannot create {path}: {error}; name a file in a directory you can write to")]
    Create {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("cannot write the QR code to {path}: {error}")]
    Write {
        path: PathBuf,
        error: std::io::Error,
    },
}

impl Qr {
    /// The QR code of `text`; a link ([`crate::LINK_BYTES_MAX`] bytes at most) always fits.
    pub fn of(text: &str) -> Result<Qr, QrError> {
        let code = QrCode::with_error_correction_level(text.as_bytes(), EcLevel::M)
            .map_err(|e| QrError::TooLong(e.to_string()))?;
        Ok(Qr { code })
    }

    /// Modules on a side, quiet zone excluded.
    pub fn width(&self) -> usize {
        self.code.width()
    }

    /// The code in Unicode half blocks, two modules a character, with its quiet zone. With
    /// `ansi` (a terminal) the colours are set (black on white), so that the code reads the
    /// right way round whatever the terminal's own colours; without (a file, a pipe) the
    /// blocks are the dark modules, for a light page.
    pub fn terminal(&self, ansi: bool) -> String {
        let width = self.code.width();
        let colors = self.code.to_colors();
        let side = width + 2 * QUIET_ZONE;
        let dark = |x: usize, y: usize| {
            let (x, y) = (x.wrapping_sub(QUIET_ZONE), y.wrapping_sub(QUIET_ZONE));
            x < width && y < width && colors[y * width + x] == Color::Dark
        };
        let mut out = String::new();
        for y in (0..side).step_by(2) {
            if ansi {
                out.push_str("\x1b[30;107m");
            }
            for x in 0..side {
                out.push(match (dark(x, y), dark(x, y + 1)) {
                    (true, true) => '█',
                    (true, false) => '▀',
                    (false, true) => '▄',
                    (false, false) => ' ',
                });
            }
            if ansi {
                out.push_str("\x1b[0m");
            }
            if y + 2 < side {
                out.push('\n');
            }
        }
        out
    }

    /// The code as an 8-bit greyscale PNG, black modules on white, with its quiet zone.
    fn png(&self, out: impl std::io::Write) -> std::io::Result<()> {
        let width = self.code.width();
        let side = (width + 2 * QUIET_ZONE) * PNG_MODULE_PIXELS;
        let mut pixels = vec![u8::MAX; side * side];
        for (i, color) in self.code.to_colors().iter().enumerate() {
            if *color != Color::Dark {
                continue;
            }
            let left = (i % width + QUIET_ZONE) * PNG_MODULE_PIXELS;
            let top = (i / width + QUIET_ZONE) * PNG_MODULE_PIXELS;
            for row in top..top + PNG_MODULE_PIXELS {
                pixels[row * side + left..row * side + left + PNG_MODULE_PIXELS].fill(0);
            }
        }
        // The side is a few hundred pixels: far within u32.
        let side = u32::try_from(side).map_err(std::io::Error::other)?;
        let mut encoder = png::Encoder::new(out, side, side);
        encoder.set_color(png::ColorType::Grayscale);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(std::io::Error::other)?;
        writer
            .write_image_data(&pixels)
            .map_err(std::io::Error::other)?;
        writer.finish().map_err(std::io::Error::other)
    }
}

/// A new file for a QR code, claimed before the code it will show is issued: created
/// readable and writable by its owner alone, never over an existing file, so that a path
/// that cannot be written fails before anything is issued.
pub struct PngFile {
    file: std::fs::File,
    path: PathBuf,
}

impl PngFile {
    /// Creates `path` (mode 0600 whatever the umask), refusing an existing file.
    pub fn create(path: &Path) -> Result<PngFile, QrError> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|error| match error.kind() {
                std::io::ErrorKind::AlreadyExists => QrError::Exists(path.to_owned()),
                _ => QrError::Create {
                    path: path.to_owned(),
                    error,
                },
            })?;
        let claimed = PngFile {
            file,
            path: path.to_owned(),
        };
        // Whatever the umask left, the code in it is for its owner only.
        if let Err(error) = claimed
            .file
            .set_permissions(std::fs::Permissions::from_mode(0o600))
        {
            claimed.discard();
            return Err(QrError::Create {
                path: path.to_owned(),
                error,
            });
        }
        Ok(claimed)
    }

    /// Writes `qr` to the file and syncs it; on failure the file is removed, so that no
    /// half-written image is left to be sent.
    pub fn write(self, qr: &Qr) -> Result<(), QrError> {
        let mut out = std::io::BufWriter::new(&self.file);
        let written = qr
            .png(&mut out)
            .and_then(|()| out.flush())
            .and_then(|()| self.file.sync_all());
        drop(out);
        written.map_err(|error| {
            let path = self.path.clone();
            self.discard();
            QrError::Write { path, error }
        })
    }

    /// Removes the file, when the code it was for was not issued.
    pub fn discard(self) {
        drop(self.file);
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINK: &str = "relais://enroll?v=1&server=relais.example:443&user=alice@example&\
                        code=ABCD0123EFGH4567&pin=sha256:47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU";

    #[test]
    fn the_terminal_drawing_has_the_quiet_zone_and_two_modules_a_line() {
        let qr = Qr::of(LINK).expect("a link fits");
        let side = qr.width() + 2 * QUIET_ZONE;
        let plain = qr.terminal(false);
        let lines: Vec<&str> = plain.lines().collect();
        assert_eq!(lines.len(), side.div_ceil(2));
        assert!(lines.iter().all(|l| l.chars().count() == side), "{plain}");
        assert!(lines[0].chars().all(|c| c == ' '), "the quiet zone");
        let ansi = qr.terminal(true);
        assert!(
            ansi.lines()
                .all(|l| l.starts_with("\x1b[30;107m") && l.ends_with("\x1b[0m"))
        );
    }

    #[test]
    fn the_png_is_private_never_overwrites_and_decodes_to_the_code() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("link.png");
        let qr = Qr::of(LINK).expect("a link fits");
        PngFile::create(&path)
            .expect("new")
            .write(&qr)
            .expect("written");
        let mode = std::fs::metadata(&path).expect("png").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let before = std::fs::read(&path).expect("png");
        assert!(matches!(PngFile::create(&path), Err(QrError::Exists(_))));
        assert_eq!(std::fs::read(&path).expect("png"), before, "left as it was");
        let decoder = png::Decoder::new(std::io::Cursor::new(before));
        let reader = decoder.read_info().expect("a PNG");
        let side = (qr.width() + 2 * QUIET_ZONE) * PNG_MODULE_PIXELS;
        assert_eq!(reader.info().width as usize, side);
        assert_eq!(reader.info().height as usize, side);

        let missing = dir.path().join("no/such/dir.png");
        let error = PngFile::create(&missing).err().expect("no directory");
        assert!(matches!(error, QrError::Create { .. }), "{error}");
        let discarded = dir.path().join("discarded.png");
        PngFile::create(&discarded).expect("new").discard();
        assert!(!discarded.exists());
    }
}
