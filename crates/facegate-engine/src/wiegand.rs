//! Wiegand output: a grant sent to a door controller as the card number a reader would have
//! sent, on two GPIO lines (D0, D1). Both lines idle high; a `0` bit pulls D0 low for the pulse
//! width, a `1` pulls D1 low, and bits follow each other at the bit interval. The formats are
//! the two open ones controllers read without configuration:
//!
//! - **26-bit (H10301)**: even parity over bits 2-13, an 8-bit facility code, a 16-bit card
//!   number, odd parity over bits 14-25;
//! - **34-bit**: even parity over bits 2-17, a 16-bit facility code, a 16-bit card number, odd
//!   parity over bits 18-33.
//!
//! The same encoder feeds the OSDP reader's card reads (`crate::osdp`), so a panel sees one
//! number whichever line it is wired to.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::EngineError;
use crate::gate::{CardNumber, GateOutput, Pulse};

/// A card format a controller reads (`gate.card_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "&'static str")]
pub enum WiegandFormat {
    /// 26-bit H10301: facility 0..=255, card 0..=65535.
    W26,
    /// 34-bit: facility 0..=65535, card 0..=65535.
    W34,
}

impl WiegandFormat {
    /// Every format, in the order errors list them.
    pub const ALL: [Self; 2] = [Self::W26, Self::W34];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::W26 => "wiegand26",
            Self::W34 => "wiegand34",
        }
    }

    /// Number of bits on the wire, parity included.
    pub fn bits(self) -> usize {
        match self {
            Self::W26 => 26,
            Self::W34 => 34,
        }
    }

    /// The largest facility code the format carries.
    pub fn max_facility(self) -> u32 {
        match self {
            Self::W26 => 0xFF,
            Self::W34 => 0xFFFF,
        }
    }

    /// The largest card number the format carries.
    pub fn max_card(self) -> u64 {
        0xFFFF
    }

    fn facility_bits(self) -> usize {
        match self {
            Self::W26 => 8,
            Self::W34 => 16,
        }
    }
}

impl From<WiegandFormat> for &'static str {
    fn from(f: WiegandFormat) -> Self {
        f.as_str()
    }
}

impl std::fmt::Display for WiegandFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A card number as a controller knows it: facility code and card number in one format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WiegandCard {
    pub format: WiegandFormat,
    pub facility: u32,
    pub card: u64,
}

/// The bits of one card read, first bit on the wire first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WiegandBits(pub Vec<bool>);

impl WiegandBits {
    /// `0`/`1` characters, first bit first.
    pub fn to_bit_string(&self) -> String {
        self.0.iter().map(|&b| if b { '1' } else { '0' }).collect()
    }

    /// Packed most significant bit first, the last byte padded with zeros (OSDP `osdp_RAW`).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![0u8; self.0.len().div_ceil(8)];
        for (i, &b) in self.0.iter().enumerate() {
            if b {
                out[i / 8] |= 0x80 >> (i % 8);
            }
        }
        out
    }

    /// The inverse of [`WiegandBits::to_bytes`] for `n` bits.
    pub fn from_bytes(bytes: &[u8], n: usize) -> Option<Self> {
        if n > bytes.len() * 8 {
            return None;
        }
        Some(Self(
            (0..n)
                .map(|i| bytes[i / 8] & (0x80 >> (i % 8)) != 0)
                .collect(),
        ))
    }
}

impl WiegandCard {
    /// Checks the numbers against the format's ranges.
    pub fn new(format: WiegandFormat, facility: u32, card: u64) -> Result<Self, String> {
        if facility > format.max_facility() {
            return Err(format!(
                "facility code {facility} does not fit {format} (0..={})",
                format.max_facility()
            ));
        }
        if card > format.max_card() {
            return Err(format!(
                "card number {card} does not fit {format} (0..={})",
                format.max_card()
            ));
        }
        Ok(Self {
            format,
            facility,
            card,
        })
    }

    /// The bits on the wire, parity included.
    pub fn encode(&self) -> WiegandBits {
        let fb = self.format.facility_bits();
        let mut data = Vec::with_capacity(fb + 16);
        for i in (0..fb).rev() {
            data.push((self.facility >> i) & 1 == 1);
        }
        for i in (0..16).rev() {
            data.push((self.card >> i) & 1 == 1);
        }
        let half = data.len() / 2;
        let ones = |s: &[bool]| s.iter().filter(|&&b| b).count();
        let even = ones(&data[..half]) % 2 == 1;
        let odd = ones(&data[half..]) % 2 == 0;
        let mut bits = Vec::with_capacity(data.len() + 2);
        bits.push(even);
        bits.extend_from_slice(&data);
        bits.push(odd);
        WiegandBits(bits)
    }

    /// Reads a bit stream back: the length picks the format, both parities must hold.
    pub fn decode(bits: &WiegandBits) -> Result<Self, String> {
        let b = &bits.0;
        let format = WiegandFormat::ALL
            .into_iter()
            .find(|f| f.bits() == b.len())
            .ok_or_else(|| format!("{} bits is neither 26 nor 34", b.len()))?;
        let data = &b[1..b.len() - 1];
        let half = data.len() / 2;
        let ones = |s: &[bool]| s.iter().filter(|&&b| b).count();
        if (ones(&data[..half]) + usize::from(b[0])) % 2 != 0 {
            return Err("even parity fails".into());
        }
        if (ones(&data[half..]) + usize::from(b[b.len() - 1])) % 2 != 1 {
            return Err("odd parity fails".into());
        }
        let value = |s: &[bool]| s.iter().fold(0u64, |v, &x| (v << 1) | u64::from(x));
        let fb = format.facility_bits();
        Ok(Self {
            format,
            facility: value(&data[..fb]) as u32,
            card: value(&data[fb..]),
        })
    }
}

/// Pulse width and bit interval on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WiegandTiming {
    pub pulse: Duration,
    pub interval: Duration,
}

/// The usual reader timing: 50 µs pulses every 2 ms (readers use 20-100 µs and 0.2-20 ms).
pub const WIEGAND_TIMING: WiegandTiming = WiegandTiming {
    pulse: Duration::from_micros(50),
    interval: Duration::from_millis(2),
};

/// Bounds of `gate.wiegand_pulse_us` (the controllers' 20-100 µs).
pub const WIEGAND_PULSE_US: (u64, u64) = (20, 100);
/// Bounds of `gate.wiegand_interval_us` (the controllers' 0.2-20 ms).
pub const WIEGAND_INTERVAL_US: (u64, u64) = (200, 20_000);

/// Two data lines: `set(d0_low, d1_low)` drives both at once.
pub trait WiegandLines: Send + std::fmt::Debug {
    fn set(&mut self, d0_low: bool, d1_low: bool) -> Result<(), EngineError>;
}

/// Sends `bits` on `lines`: each bit pulls its line low for `timing.pulse` (held by spinning,
/// since a sleep overshoots tens of microseconds), bit starts at least `timing.interval` apart.
pub fn transmit(
    lines: &mut dyn WiegandLines,
    bits: &WiegandBits,
    timing: WiegandTiming,
) -> Result<(), EngineError> {
    lines.set(false, false)?;
    let mut previous: Option<Instant> = None;
    for &bit in &bits.0 {
        // Each bit starts one interval after the previous one really started: a late wake-up
        // makes the gap longer, never shorter than a controller accepts.
        if let Some(at) = previous.map(|p| p + timing.interval) {
            loop {
                let now = Instant::now();
                if now >= at {
                    break;
                }
                std::thread::sleep(at - now);
            }
        }
        lines.set(!bit, bit)?;
        // Timed from when the line is low, so no pulse is shorter than `timing.pulse`.
        let low = Instant::now();
        previous = Some(low);
        while low.elapsed() < timing.pulse {
            std::hint::spin_loop();
        }
        lines.set(false, false)?;
    }
    Ok(())
}

/// D0 and D1 on a GPIO character device, requested as active-low outputs (active = pulled low).
#[derive(Debug)]
pub struct GpioWiegandLines {
    d0: u32,
    d1: u32,
    request: gpiocdev::Request,
}

impl GpioWiegandLines {
    /// Requests lines `d0` and `d1` of `chip` as outputs, both idle (high).
    pub fn open(chip: &std::path::Path, d0: u32, d1: u32) -> Result<Self, EngineError> {
        let name = format!("wiegand:{}:{d0},{d1}", chip.display());
        if !chip.exists() {
            return Err(EngineError::Gate {
                output: name,
                reason: "no such GPIO chip (is this the terminal's board? see `gpiodetect`)".into(),
            });
        }
        let request = gpiocdev::Request::builder()
            .on_chip(chip)
            .with_consumer("facegate-wiegand")
            .with_lines(&[d0, d1])
            .as_output(gpiocdev::line::Value::Inactive)
            .as_active_low()
            .request()
            .map_err(|e| EngineError::Gate {
                output: name,
                reason: format!("cannot request the lines: {e}"),
            })?;
        Ok(Self { d0, d1, request })
    }
}

impl WiegandLines for GpioWiegandLines {
    fn set(&mut self, d0_low: bool, d1_low: bool) -> Result<(), EngineError> {
        let v = |low: bool| {
            if low {
                gpiocdev::line::Value::Active
            } else {
                gpiocdev::line::Value::Inactive
            }
        };
        let mut values = gpiocdev::line::Values::default();
        values.set(self.d0, v(d0_low));
        values.set(self.d1, v(d1_low));
        self.request
            .set_values(&values)
            .map_err(|e| EngineError::Gate {
                output: format!("wiegand:{},{}", self.d0, self.d1),
                reason: e.to_string(),
            })
    }
}

/// A grant sent as the subject's card number ([`Pulse::card`]) on two data lines.
#[derive(Debug)]
pub struct WiegandGate {
    name: String,
    format: WiegandFormat,
    facility: u32,
    timing: WiegandTiming,
    lines: Box<dyn WiegandLines>,
}

impl WiegandGate {
    pub fn new(
        name: String,
        format: WiegandFormat,
        facility: u32,
        timing: WiegandTiming,
        lines: Box<dyn WiegandLines>,
    ) -> Self {
        Self {
            name,
            format,
            facility,
            timing,
            lines,
        }
    }

    /// Requests D0 and D1 of `chip`.
    pub fn open(
        chip: impl Into<PathBuf>,
        d0: u32,
        d1: u32,
        format: WiegandFormat,
        facility: u32,
        timing: WiegandTiming,
    ) -> Result<Self, EngineError> {
        let chip = chip.into();
        let lines = GpioWiegandLines::open(&chip, d0, d1)?;
        Ok(Self::new(
            format!("wiegand:{}:{d0},{d1}", chip.display()),
            format,
            facility,
            timing,
            Box::new(lines),
        ))
    }
}

/// The card a grant reports: the subject's card number from the register in `format` with the
/// site's facility code; an override or a subject without a numeric card has none.
pub(crate) fn card_of(
    pulse: &Pulse,
    format: WiegandFormat,
    facility: u32,
) -> Result<WiegandCard, String> {
    let who = pulse
        .subject
        .as_ref()
        .map_or("an operator override".to_owned(), |s| {
            format!("subject {s}")
        });
    let number = pulse.card.as_ref().map(CardNumber::as_str).ok_or_else(|| {
        format!(
            "{who} has no live card in the credential register (issue one: `printf %s \
             NUMBER | facegate credential issue ID --kind card --operator NAME`)"
        )
    })?;
    let card: u64 = number
        .parse()
        .map_err(|_| format!("the card of {who} is not a decimal card number"))?;
    WiegandCard::new(format, facility, card).map_err(|e| format!("{who}: {e}"))
}

impl GateOutput for WiegandGate {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn wants_card(&self) -> bool {
        true
    }

    fn pulse(&mut self, pulse: &Pulse) -> Result<(), EngineError> {
        let card =
            card_of(pulse, self.format, self.facility).map_err(|reason| EngineError::Gate {
                output: self.name.clone(),
                reason,
            })?;
        transmit(self.lines.as_mut(), &card.encode(), self.timing)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[test]
    fn known_vectors() {
        // Facility 1, card 12345 (0x3039). 26-bit: the first 12 data bits 00000001 0011 hold
        // three ones (even parity 1), the last 12 000000111001 four (odd parity 1).
        let c = WiegandCard::new(WiegandFormat::W26, 1, 12345).unwrap();
        assert_eq!(c.encode().to_bit_string(), "10000000100110000001110011");
        assert_eq!(c.encode().to_bytes(), [0x80, 0x98, 0x1C, 0xC0]);
        // 34-bit: 0000000000000001 (one 1: even parity 1), 0011000000111001 (six: odd parity 1).
        let c = WiegandCard::new(WiegandFormat::W34, 1, 12345).unwrap();
        assert_eq!(
            c.encode().to_bit_string(),
            "1000000000000000100110000001110011"
        );
        // Facility 0, card 0: no ones, so even parity 0 and odd parity 1.
        let c = WiegandCard::new(WiegandFormat::W26, 0, 0).unwrap();
        assert_eq!(c.encode().to_bit_string(), "00000000000000000000000001");
        // Facility 255, card 65535 (26-bit): 12 ones then 12 ones: parities 0 and 1.
        let c = WiegandCard::new(WiegandFormat::W26, 255, 65535).unwrap();
        assert_eq!(c.encode().to_bit_string(), "01111111111111111111111111");
    }

    #[test]
    fn decode_inverts_encode_and_catches_each_flipped_bit() {
        for (format, facility, card) in [
            (WiegandFormat::W26, 1, 12345),
            (WiegandFormat::W26, 200, 7),
            (WiegandFormat::W34, 4321, 65535),
            (WiegandFormat::W34, 0, 1),
        ] {
            let c = WiegandCard::new(format, facility, card).unwrap();
            let bits = c.encode();
            assert_eq!(bits.0.len(), format.bits());
            assert_eq!(WiegandCard::decode(&bits).unwrap(), c);
            let back = WiegandBits::from_bytes(&bits.to_bytes(), bits.0.len()).unwrap();
            assert_eq!(back, bits);
            for i in 0..bits.0.len() {
                let mut bad = bits.clone();
                bad.0[i] = !bad.0[i];
                assert!(WiegandCard::decode(&bad).is_err(), "{format} bit {i}");
            }
        }
    }

    #[test]
    fn numbers_outside_the_format_are_refused() {
        assert_eq!(
            WiegandCard::new(WiegandFormat::W26, 256, 1).unwrap_err(),
            "facility code 256 does not fit wiegand26 (0..=255)"
        );
        assert_eq!(
            WiegandCard::new(WiegandFormat::W34, 1, 65536).unwrap_err(),
            "card number 65536 does not fit wiegand34 (0..=65535)"
        );
    }

    /// A software line reader: records each level change of D0 and D1 with its time, the way a
    /// controller's input interrupt sees them.
    #[derive(Debug, Clone, Default)]
    struct LineReader(Arc<Mutex<Vec<(Instant, bool, bool)>>>);

    impl WiegandLines for LineReader {
        fn set(&mut self, d0_low: bool, d1_low: bool) -> Result<(), EngineError> {
            self.0
                .lock()
                .unwrap()
                .push((Instant::now(), d0_low, d1_low));
            Ok(())
        }
    }

    impl LineReader {
        /// Decodes the recorded levels: each falling edge of D0 is a 0, of D1 a 1; checks that
        /// both lines are never low together, pulse widths and bit intervals.
        fn decode(&self) -> (WiegandBits, Vec<Duration>, Vec<Duration>) {
            let trace = self.0.lock().unwrap().clone();
            let (mut bits, mut widths, mut starts) = (Vec::new(), Vec::new(), Vec::new());
            let mut low_since: Option<(Instant, bool)> = None;
            let mut prev = (false, false);
            for (t, d0, d1) in trace {
                assert!(!(d0 && d1), "D0 and D1 low at once");
                if (d0 || d1) && !(prev.0 || prev.1) {
                    low_since = Some((t, d1));
                    starts.push(t);
                } else if !(d0 || d1)
                    && (prev.0 || prev.1)
                    && let Some((since, bit)) = low_since.take()
                {
                    bits.push(bit);
                    widths.push(t - since);
                }
                prev = (d0, d1);
            }
            let intervals = starts.windows(2).map(|w| w[1] - w[0]).collect();
            (WiegandBits(bits), widths, intervals)
        }
    }

    #[test]
    fn a_grant_goes_out_on_the_lines_with_reader_timing() {
        let reader = LineReader::default();
        let mut gate = WiegandGate::new(
            "wiegand:test".into(),
            WiegandFormat::W26,
            1,
            WIEGAND_TIMING,
            Box::new(reader.clone()),
        );
        let pulse = Pulse {
            subject: Some(facegate_types::SubjectId::new("emp-7").unwrap()),
            method: crate::Method::Face,
            track: Some(3),
            card: Some(CardNumber::new("12345")),
        };
        gate.pulse(&pulse).unwrap();
        let (bits, widths, intervals) = reader.decode();
        assert_eq!(bits.to_bit_string(), "10000000100110000001110011");
        // 34-bit on the same lines: the reader gets 34 bits that decode to the same card.
        let reader34 = LineReader::default();
        let mut gate34 = WiegandGate::new(
            "wiegand:test".into(),
            WiegandFormat::W34,
            1,
            WIEGAND_TIMING,
            Box::new(reader34.clone()),
        );
        gate34.pulse(&pulse).unwrap();
        let (bits34, _, intervals34) = reader34.decode();
        assert_eq!(bits34.to_bit_string(), "1000000000000000100110000001110011");
        assert_eq!(
            WiegandCard::decode(&bits34).unwrap(),
            WiegandCard::new(WiegandFormat::W34, 1, 12345).unwrap()
        );
        assert_eq!(intervals34.len(), 33);
        assert_eq!(
            WiegandCard::decode(&bits).unwrap(),
            WiegandCard::new(WiegandFormat::W26, 1, 12345).unwrap()
        );
        // Pulses are held at least 50 µs and released well inside the interval; bits start
        // no sooner than 2 ms apart (a busy machine can only make them later).
        for w in &widths {
            assert!(*w >= Duration::from_micros(50), "{w:?}");
            assert!(*w < Duration::from_micros(1500), "{w:?}");
        }
        assert_eq!(intervals.len(), 25);
        for i in &intervals {
            assert!(*i >= Duration::from_micros(1900), "{i:?}");
        }
        let median = {
            let mut v = intervals.clone();
            v.sort();
            v[v.len() / 2]
        };
        assert!(median < Duration::from_millis(5), "{median:?}");
    }

    #[test]
    fn a_grant_without_a_card_number_is_a_clear_error() {
        let mut gate = WiegandGate::new(
            "wiegand:test".into(),
            WiegandFormat::W34,
            1,
            WIEGAND_TIMING,
            Box::new(LineReader::default()),
        );
        let mut pulse = Pulse {
            subject: Some(facegate_types::SubjectId::new("emp-7").unwrap()),
            method: crate::Method::Face,
            track: None,
            card: None,
        };
        let e = gate.pulse(&pulse).unwrap_err().to_string();
        assert_eq!(
            e,
            "gate output wiegand:test: subject emp-7 has no live card in the credential \
             register (issue one: `printf %s NUMBER | facegate credential issue ID --kind card \
             --operator NAME`)"
        );
        pulse.card = Some(CardNumber::new("CAFE01"));
        let e = gate.pulse(&pulse).unwrap_err().to_string();
        assert!(
            e.ends_with("the card of subject emp-7 is not a decimal card number"),
            "{e}"
        );
        pulse.card = Some(CardNumber::new("70000"));
        let e = gate.pulse(&pulse).unwrap_err().to_string();
        assert!(
            e.ends_with("card number 70000 does not fit wiegand34 (0..=65535)"),
            "{e}"
        );
    }

    #[test]
    fn gpio_lines_without_a_chip_are_a_clear_error() {
        let e = GpioWiegandLines::open(std::path::Path::new("/dev/gpiochip-absent"), 5, 6)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "gate output wiegand:/dev/gpiochip-absent:5,6: no such GPIO chip (is this the \
             terminal's board? see `gpiodetect`)"
        );
    }
}
