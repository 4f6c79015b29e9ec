//! The real GNSS driver: NMEA read from a serial port with tokio-serial.
//!
//! On the SIM7600 the receiver's NMEA output appears on the second USB
//! interface (`/dev/ttyUSB1`) once the modem has run `AT+CGPS=1` (SIM7600
//! Series AT Command Manual, §21.2.1). The port is opened lazily and reopened
//! after an error, because it vanishes while the modem resets.

use std::path::PathBuf;

use tokio::io::AsyncReadExt;
use tokio_serial::{SerialPortBuilderExt, SerialStream};

use super::{Gnss, GnssConfig, GnssError};

/// NMEA from a serial port.
#[derive(Debug)]
pub struct SerialGnss {
    port: PathBuf,
    baud: u32,
    stream: Option<SerialStream>,
}

impl SerialGnss {
    /// A driver for `cfg.port` at `cfg.baud`; nothing is opened yet.
    pub fn new(cfg: &GnssConfig) -> Self {
        SerialGnss {
            port: cfg.port.clone(),
            baud: cfg.baud,
            stream: None,
        }
    }

    fn open(&self) -> Result<SerialStream, GnssError> {
        let path = self.port.to_string_lossy();
        tokio_serial::new(path, self.baud)
            .open_native_async()
            .map_err(|e| GnssError::Open {
                port: self.port.clone(),
                source: e.into(),
            })
    }
}

impl Gnss for SerialGnss {
    async fn read_nmea(&mut self, buf: &mut [u8]) -> Result<usize, GnssError> {
        let stream = match &mut self.stream {
            Some(s) => s,
            None => self.stream.insert(self.open()?),
        };
        match stream.read(buf).await {
            // A tty does not end: zero bytes means the device went away.
            Ok(0) => {
                self.stream = None;
                Err(GnssError::Read(std::io::ErrorKind::UnexpectedEof.into()))
            }
            Ok(n) => Ok(n),
            Err(e) => {
                self.stream = None;
                Err(GnssError::Read(e))
            }
        }
    }
}
