using System.Text;
using SpliceTransport.Http;

namespace SpliceTransport.Tests.Unit;

/// <summary>The sniffer against cases from Go's net/http sniff_test.go, which defines the behaviour we follow.</summary>
public class ContentSnifferTests
{
    public static TheoryData<string, byte[], string> Cases => new()
    {
        { "empty", [], "text/plain; charset=utf-8" },
        { "binary", [1, 2, 3], "application/octet-stream" },
        { "HTML document #1", Ascii("<HtMl><bOdY>blah blah blah</body></html>"), "text/html; charset=utf-8" },
        { "HTML document #2", Ascii("<HTML></HTML>"), "text/html; charset=utf-8" },
        { "HTML document #3 (leading whitespace)", Ascii("   <!DOCTYPE HTML>..."), "text/html; charset=utf-8" },
        { "HTML document #4 (leading CRLF)", Ascii("\r\n<html>..."), "text/html; charset=utf-8" },
        { "HTML tag needs a terminator", Ascii("<htmlx>"), "text/plain; charset=utf-8" },
        { "plain text", Ascii("This is not HTML. It has ☃ though."), "text/plain; charset=utf-8" },
        { "XML", Ascii("\n<?xml!"), "text/xml; charset=utf-8" },
        { "PDF", Ascii("%PDF-1.4"), "application/pdf" },
        { "UTF-16 BE BOM", [0xFE, 0xFF, 0x00, 0x41], "text/plain; charset=utf-16be" },
        { "UTF-16 LE BOM", [0xFF, 0xFE, 0x41, 0x00], "text/plain; charset=utf-16le" },
        { "UTF-8 BOM", [0xEF, 0xBB, 0xBF, 0x41], "text/plain; charset=utf-8" },
        { "GIF 87a", Ascii("GIF87a"), "image/gif" },
        { "GIF 89a", Ascii("GIF89a..."), "image/gif" },
        { "PNG", [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 0x0D], "image/png" },
        { "JPEG", [0xFF, 0xD8, 0xFF, 0xE0], "image/jpeg" },
        { "WEBP", Ascii("RIFF\x1a\x00\x00\x00WEBPVP8 "), "image/webp" },
        { "WAV", Ascii("RIFFb\xb8\x00\x00WAVEfmt \x12\x00\x00\x00\x06"), "audio/wave" },
        { "MP3 with ID3", Ascii("ID3\x03\x00\x00\x00\x00\x0f"), "audio/mpeg" },
        { "OGG", Ascii("OggS\x00\x02\x00\x00"), "application/ogg" },
        { "MP4", [0x00, 0x00, 0x00, 0x18, (byte)'f', (byte)'t', (byte)'y', (byte)'p', (byte)'m', (byte)'p', (byte)'4', (byte)'2', 0, 0, 0, 0, (byte)'m', (byte)'p', (byte)'4', (byte)'1', (byte)'i', (byte)'s', (byte)'o', (byte)'m'], "video/mp4" },
        { "WebM", [0x1A, 0x45, 0xDF, 0xA3, 0x01], "video/webm" },
        { "woff2", Ascii("wOF2\x00\x01\x00\x00"), "font/woff2" },
        { "gzip", [0x1F, 0x8B, 0x08, 0x00], "application/x-gzip" },
        { "zip", Ascii("PK\x03\x04\x14\x00"), "application/zip" },
        { "wasm", [0x00, 0x61, 0x73, 0x6D, 0x01, 0x00], "application/wasm" },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void SniffsLikeGo(string description, byte[] data, string expected)
    {
        Assert.True(expected == ContentSniffer.Sniff(data), $"{description}: expected {expected}, got {ContentSniffer.Sniff(data)}");
    }

    [Fact]
    public void LooksOnlyAtTheFirst512Bytes()
    {
        byte[] data = new byte[1024];
        data.AsSpan().Fill((byte)'a');
        data[600] = 0; // A binary byte beyond the resource header does not count.
        Assert.Equal(ContentSniffer.PlainText, ContentSniffer.Sniff(data));
        data[100] = 0;
        Assert.Equal(ContentSniffer.Binary, ContentSniffer.Sniff(data));
    }

    private static byte[] Ascii(string text) => Encoding.Latin1.GetBytes(text);
}
