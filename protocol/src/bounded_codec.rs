//! The gRPC codec of every kubeledger service (client and server): prost,
//! except that a message with more top-level fields than
//! [`MAX_TOP_LEVEL_FIELDS`] is refused before it is decoded.
//!
//! The size limits of the servers bound bytes, not objects: 64 MiB of 2-byte
//! `SubmitBatch` entries decode into tens of millions of transactions, each
//! with its own allocations, and peer frames allow more. Counting the fields
//! first is one pass over the bytes with no allocation. The largest honest
//! message is a block's commit event, one entry per transaction of a block of
//! at most 100,000.

use std::marker::PhantomData;

use bytes::Buf;
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder};
use tonic::Status;
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// Top-level fields (repeated entries count one each) a message may carry.
pub const MAX_TOP_LEVEL_FIELDS: usize = 200_000;

/// [`ProstCodec`] with the field bound on decoding.
#[derive(Debug, Clone)]
pub struct BoundedCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for BoundedCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for BoundedCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = BoundedDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::default().encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        BoundedDecoder(ProstCodec::<T, U>::default().decoder())
    }
}

/// Decodes `U` once its top-level field count is within bounds.
#[derive(Debug, Clone)]
pub struct BoundedDecoder<U>(ProstDecoder<U>);

impl<U: Message + Default> Decoder for BoundedDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        // A gRPC message arrives whole in one contiguous buffer; a partial
        // chunk would only make the count smaller than the truth, so count
        // what is there and let the size limit bound the rest.
        check_fields(buf.chunk())?;
        self.0.decode(buf)
    }

    fn buffer_settings(&self) -> tonic::codec::BufferSettings {
        self.0.buffer_settings()
    }
}

/// Refuses an encoded message with more than [`MAX_TOP_LEVEL_FIELDS`]
/// top-level fields, before anything is decoded.
pub fn check_fields(bytes: &[u8]) -> Result<(), Status> {
    if top_level_fields(bytes, MAX_TOP_LEVEL_FIELDS) > MAX_TOP_LEVEL_FIELDS {
        return Err(Status::resource_exhausted(format!(
            "message has more than {MAX_TOP_LEVEL_FIELDS} fields (repeated entries count one each); refused undecoded"
        )));
    }
    Ok(())
}

/// Decodes one whole message as the gRPC decoder does: the field bound
/// first, then prost. (For callers holding the bytes, such as fuzz targets.)
pub fn decode<U: Message + Default>(bytes: &[u8]) -> Result<U, Status> {
    check_fields(bytes)?;
    U::decode(bytes).map_err(|e| Status::invalid_argument(format!("cannot decode message: {e}")))
}

/// The number of top-level fields in an encoded protobuf message, counting
/// stops once past `stop_after`. Malformed input ends the count where it
/// becomes unreadable: decoding then reports the error itself.
pub fn top_level_fields(mut bytes: &[u8], stop_after: usize) -> usize {
    let mut count = 0;
    while !bytes.is_empty() && count <= stop_after {
        let Ok(key) = prost::encoding::decode_varint(&mut bytes) else {
            break;
        };
        let skip = match key & 7 {
            0 => match prost::encoding::decode_varint(&mut bytes) {
                Ok(_) => 0,
                Err(_) => break,
            },
            1 => 8,
            2 => match prost::encoding::decode_varint(&mut bytes) {
                Ok(len) => match usize::try_from(len) {
                    Ok(len) => len,
                    Err(_) => break,
                },
                Err(_) => break,
            },
            5 => 4,
            // Groups (3, 4) are not used by any kubeledger message; 6 and 7
            // are not wire types.
            _ => break,
        };
        if skip > bytes.remaining() {
            break;
        }
        bytes.advance(skip);
        count += 1;
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{SignedTransaction, SubmitBatchRequest};

    #[test]
    fn counts_every_top_level_field_and_stops_early() {
        let request = SubmitBatchRequest {
            txs: vec![SignedTransaction::default(); 1_000],
        };
        let bytes = request.encode_to_vec();
        assert_eq!(top_level_fields(&bytes, usize::MAX), 1_000);
        assert_eq!(
            top_level_fields(&bytes, 10),
            11,
            "stops once past the bound"
        );
        // Varint, 64-bit and 32-bit fields count too; truncation ends the count.
        let mixed = [
            0x08, 0x96, 0x01, 0x11, 0, 0, 0, 0, 0, 0, 0, 0, 0x1d, 0, 0, 0, 0,
        ];
        assert_eq!(top_level_fields(&mixed, usize::MAX), 3);
        assert_eq!(top_level_fields(&mixed[..5], usize::MAX), 1);
        assert_eq!(top_level_fields(&[0xff; 3], usize::MAX), 0);
        assert_eq!(top_level_fields(&[], usize::MAX), 0);
    }
}
