//! A `multipart/form-data` body (RFC 7578) for CosyVoice's FastAPI routes: text fields and one
//! file part, with a random boundary. Bodies are built whole in memory because we always know
//! every part and must send `Content-Length` (never chunk toward the backend: behind an HTTP/2
//! client, Pingora 0.9.1 can otherwise send a duplicated chunk terminator, its issue #935).

use bytes::{BufMut, Bytes, BytesMut};

/// A form being built; [`Form::finish`] gives the `Content-Type` value and the body.
pub struct Form {
    boundary: String,
    body: BytesMut,
}

impl Form {
    pub fn new() -> Self {
        Self {
            boundary: format!("cosygate-{:032x}", rand::random::<u128>()),
            body: BytesMut::new(),
        }
    }

    /// Adds a text field.
    pub fn text(&mut self, name: &str, value: &str) -> &mut Self {
        self.part_header(name, None);
        self.body.put_slice(value.as_bytes());
        self.body.put_slice(b"\r\n");
        self
    }

    /// Adds a file field.
    pub fn file(&mut self, name: &str, filename: &str, content_type: &str, data: &[u8]) -> &mut Self {
        self.body.reserve(data.len() + 256);
        self.part_header(name, Some((filename, content_type)));
        self.body.put_slice(data);
        self.body.put_slice(b"\r\n");
        self
    }

    fn part_header(&mut self, name: &str, file: Option<(&str, &str)>) {
        let name = escape(name);
        self.body.put_slice(format!("--{}\r\n", self.boundary).as_bytes());
        match file {
            None => self.body.put_slice(format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes()),
            Some((filename, ctype)) => self.body.put_slice(
                format!(
                    "Content-Disposition: form-data; name=\"{name}\"; filename=\"{}\"\r\nContent-Type: {ctype}\r\n\r\n",
                    escape(filename)
                )
                .as_bytes(),
            ),
        }
    }

    /// Closes the form: returns the `Content-Type` header value and the body.
    pub fn finish(mut self) -> (String, Bytes) {
        self.body
            .put_slice(format!("--{}--\r\n", self.boundary).as_bytes());
        (
            format!("multipart/form-data; boundary={}", self.boundary),
            self.body.freeze(),
        )
    }
}

impl Default for Form {
    fn default() -> Self {
        Self::new()
    }
}

/// Quotes and line breaks cannot appear inside a quoted parameter (RFC 7578 section 2).
fn escape(s: &str) -> String {
    s.replace('"', "%22").replace('\r', "%0D").replace('\n', "%0A")
}
