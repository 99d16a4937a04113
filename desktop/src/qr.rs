//! QR codes on screen: a payload (a safety number's, a device link) as an
//! [`egui::ColorImage`] of one texel per module inside the quiet zone the standard asks
//! for, drawn through a texture with nearest filtering at a whole number of screen pixels
//! per module, so that every module stays a crisp square that a phone camera reads.

use egui::{Color32, ColorImage, Response, TextureHandle, TextureOptions, Ui, Vec2};
use qrcode::{Color, EcLevel, QrCode};

/// Light modules around the code on each side: ISO/IEC 18004 asks for four, and scanners
/// fail to find a code that sits closer to other drawing.
pub const QUIET_ZONE_MODULES: usize = 4;

/// The side, in points, a code is drawn at when there is room: large enough for a phone
/// held at arm's length, small enough to sit beside the digits it repeats.
pub const SIDE_POINTS: f32 = 220.0;

/// Why a payload has no QR code: too long for the largest version (never the case for a
/// safety number or a device link, which are a few hundred bytes at most).
#[derive(Debug, thiserror::Error)]
#[error("cannot draw a QR code of this text: {0}")]
pub struct QrError(#[from] qrcode::types::QrError);

/// The code of `payload` as an image: black modules on white, one texel per module,
/// [`QUIET_ZONE_MODULES`] white modules on every side. Medium error correction, as the
/// CLI's codes, so the same phone reads both.
pub fn image(payload: &str) -> Result<ColorImage, QrError> {
    let code = QrCode::with_error_correction_level(payload.as_bytes(), EcLevel::M)?;
    let modules = code.width();
    let side = modules + 2 * QUIET_ZONE_MODULES;
    let mut pixels = vec![Color32::WHITE; side * side];
    for (index, color) in code.to_colors().into_iter().enumerate() {
        if color == Color::Dark {
            let (y, x) = (index / modules, index % modules);
            pixels[(y + QUIET_ZONE_MODULES) * side + x + QUIET_ZONE_MODULES] = Color32::BLACK;
        }
    }
    Ok(ColorImage::new([side, side], pixels))
}

/// Draws the code of `payload` in `ui`, named `label` for screen readers and tests, at
/// most `max_side` points wide. The texture is kept in `slot` (one per place that shows
/// a code) and made again only when the payload changes; [`forget`] drops it. A payload
/// that has no code shows nothing and returns `None`.
pub fn show(
    ui: &mut Ui,
    slot: &str,
    payload: &str,
    label: &str,
    max_side: f32,
) -> Option<Response> {
    let texture = texture(ui.ctx(), slot, payload)?;
    let texels = texture.size()[0] as f32;
    // A whole number of physical pixels per module, so that no module is a pixel wider
    // than its neighbour; at least one, even if the code then overflows `max_side`.
    let pixels_per_point = ui.ctx().pixels_per_point();
    let per_module = ((max_side * pixels_per_point) / texels).floor().max(1.0);
    let side = texels * per_module / pixels_per_point;
    let response = ui.add(egui::Image::new((texture.id(), Vec2::splat(side))));
    let label = label.to_owned();
    response.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Image, true, &label));
    Some(response)
}

/// Drops the texture kept in `slot`: for a secret (a device link) once it is hidden.
pub fn forget(ctx: &egui::Context, slot: &str) {
    ctx.data_mut(|data| data.remove::<Kept>(slot_id(slot)));
}

/// What a slot keeps: which payload its texture draws (by hash, so that the text of a
/// secret stays out of the UI's memory) and the texture.
#[derive(Clone)]
struct Kept {
    payload_hash: u64,
    texture: TextureHandle,
}

fn slot_id(slot: &str) -> egui::Id {
    egui::Id::unique(("relais-qr", slot))
}

/// The slot's texture for `payload`, made now if the slot holds another payload's.
fn texture(ctx: &egui::Context, slot: &str, payload: &str) -> Option<TextureHandle> {
    let id = slot_id(slot);
    let payload_hash = egui::Id::unique(payload).value();
    if let Some(kept) = ctx.data(|data| data.get_temp::<Kept>(id))
        && kept.payload_hash == payload_hash
    {
        return Some(kept.texture);
    }
    let image = image(payload).ok()?;
    let texture = ctx.load_texture(format!("qr-{slot}"), image, TextureOptions::NEAREST);
    ctx.data_mut(|data| {
        data.insert_temp(
            id,
            Kept {
                payload_hash,
                texture: texture.clone(),
            },
        )
    });
    Some(texture)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_image_is_the_code_inside_a_quiet_zone() {
        let payload = "relais-safety:1:alice@interieur.gouv.fr:bob@interieur.gouv.fr:\
                       123456789012345678901234567890123456789012345678901234567890";
        let code = QrCode::with_error_correction_level(payload, EcLevel::M).expect("fits");
        let image = image(payload).expect("a code");
        let side = code.width() + 2 * QUIET_ZONE_MODULES;
        assert_eq!(image.size, [side, side]);
        let at = |x: usize, y: usize| image.pixels[y * side + x];
        for y in 0..side {
            for x in 0..side {
                let in_margin = x < QUIET_ZONE_MODULES
                    || y < QUIET_ZONE_MODULES
                    || x >= side - QUIET_ZONE_MODULES
                    || y >= side - QUIET_ZONE_MODULES;
                if in_margin {
                    assert_eq!(at(x, y), Color32::WHITE, "quiet zone at {x},{y}");
                } else {
                    let module = code[(x - QUIET_ZONE_MODULES, y - QUIET_ZONE_MODULES)];
                    let expected = match module {
                        Color::Dark => Color32::BLACK,
                        Color::Light => Color32::WHITE,
                    };
                    assert_eq!(at(x, y), expected, "module at {x},{y}");
                }
            }
        }
        // A finder pattern's dark corner sits right inside the quiet zone: the code is
        // not shifted or mirrored.
        assert_eq!(at(QUIET_ZONE_MODULES, QUIET_ZONE_MODULES), Color32::BLACK);
        assert_eq!(
            at(side - QUIET_ZONE_MODULES - 1, QUIET_ZONE_MODULES),
            Color32::BLACK
        );
        assert_eq!(
            at(QUIET_ZONE_MODULES, side - QUIET_ZONE_MODULES - 1),
            Color32::BLACK
        );
    }

    #[test]
    fn a_payload_too_long_for_any_code_is_an_error_not_a_panic() {
        let payload = "9".repeat(8_000);
        assert!(image(&payload).is_err());
    }
}
