//! The checksum a PROXY v2 header may carry (§2.2.3).

/// CRC-32C (Castagnoli), the checksum of RFC 4960 appendix B that §2.2.3
/// names: reflected, polynomial 0x82F63B78, initial value and final xor
/// 0xFFFFFFFF, a byte at a time from a table built at compile time.
#[derive(Debug)]
pub(super) struct Crc32c(u32);

/// The reflected Castagnoli polynomial.
const CRC32C_POLYNOMIAL: u32 = 0x82F6_3B78;

/// For each byte value, its CRC remainder after eight shifts.
const CRC32C_TABLE: [u32; 256] = crc32c_table();

const fn crc32c_table() -> [u32; 256] {
    let mut table = [0; 256];
    let mut index = 0;
    while index < 256 {
        let mut remainder = index as u32;
        let mut bit = 0;
        while bit < 8 {
            remainder = if remainder & 1 == 1 {
                (remainder >> 1) ^ CRC32C_POLYNOMIAL
            } else {
                remainder >> 1
            };
            bit += 1;
        }
        table[index] = remainder;
        index += 1;
    }
    table
}

impl Crc32c {
    pub(super) fn new() -> Self {
        Crc32c(!0)
    }

    pub(super) fn update(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            let index = (self.0 ^ u32::from(byte)) & 0xFF;
            self.0 = CRC32C_TABLE[index as usize] ^ (self.0 >> 8);
        }
    }

    pub(super) fn finish(&self) -> u32 {
        !self.0
    }
}
