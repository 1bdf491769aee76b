using System.Buffers.Binary;

namespace SpliceTransport.Http;

/// <summary>
/// Picks a Content-Type from a file's first bytes the way Go's net/http <c>DetectContentType</c> does:
/// the subset of the WHATWG MIME Sniffing Standard that is safe for a server (no script or feed sniffing),
/// checked in the standard's order, falling back to text/plain or application/octet-stream.
/// </summary>
internal static class ContentSniffer
{
    /// <summary>The standard reads at most this many bytes (the "resource header").</summary>
    public const int MaxLength = 512;

    public const string Html = "text/html; charset=utf-8";
    public const string PlainText = "text/plain; charset=utf-8";
    public const string Binary = "application/octet-stream";

    private static readonly Signature[] s_signatures =
    [
        .. HtmlTags("<!DOCTYPE HTML", "<HTML", "<HEAD", "<SCRIPT", "<IFRAME", "<H1", "<DIV", "<FONT", "<TABLE",
            "<A", "<STYLE", "<TITLE", "<B", "<BODY", "<BR", "<P", "<!--"),
        new Masked("<?xml"u8.ToArray(), null, "text/xml; charset=utf-8", SkipWhitespace: true),
        new Exact("%PDF-"u8.ToArray(), "application/pdf"),
        new Exact("%!PS-Adobe-"u8.ToArray(), "application/postscript"),

        // Byte order marks.
        new Masked([0xFE, 0xFF, 0x00, 0x00], [0xFF, 0xFF, 0x00, 0x00], "text/plain; charset=utf-16be"),
        new Masked([0xFF, 0xFE, 0x00, 0x00], [0xFF, 0xFF, 0x00, 0x00], "text/plain; charset=utf-16le"),
        new Masked([0xEF, 0xBB, 0xBF, 0x00], [0xFF, 0xFF, 0xFF, 0x00], PlainText),

        // Images.
        new Exact([0x00, 0x00, 0x01, 0x00], "image/x-icon"),
        new Exact([0x00, 0x00, 0x02, 0x00], "image/x-icon"),
        new Exact("BM"u8.ToArray(), "image/bmp"),
        new Exact("GIF87a"u8.ToArray(), "image/gif"),
        new Exact("GIF89a"u8.ToArray(), "image/gif"),
        new Masked("RIFF\0\0\0\0WEBPVP"u8.ToArray(), [0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF], "image/webp"),
        new Exact([0x89, (byte)'P', (byte)'N', (byte)'G', 0x0D, 0x0A, 0x1A, 0x0A], "image/png"),
        new Exact([0xFF, 0xD8, 0xFF], "image/jpeg"),

        // Audio and video.
        new Masked("FORM\0\0\0\0AIFF"u8.ToArray(), [0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF], "audio/aiff"),
        new Masked("ID3"u8.ToArray(), [0xFF, 0xFF, 0xFF], "audio/mpeg"),
        new Masked("OggS\0"u8.ToArray(), [0xFF, 0xFF, 0xFF, 0xFF, 0xFF], "application/ogg"),
        new Masked("MThd\0\0\0\x06"u8.ToArray(), [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF], "audio/midi"),
        new Masked("RIFF\0\0\0\0AVI "u8.ToArray(), [0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF], "video/avi"),
        new Masked("RIFF\0\0\0\0WAVE"u8.ToArray(), [0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF], "audio/wave"),
        new Mp4(),
        new Exact([0x1A, 0x45, 0xDF, 0xA3], "video/webm"),

        // Fonts.
        new Masked([.. new byte[34], (byte)'L', (byte)'P'], [.. new byte[34], 0xFF, 0xFF], "application/vnd.ms-fontobject"),
        new Exact([0x00, 0x01, 0x00, 0x00], "font/ttf"),
        new Exact("OTTO"u8.ToArray(), "font/otf"),
        new Exact("ttcf"u8.ToArray(), "font/collection"),
        new Exact("wOFF"u8.ToArray(), "font/woff"),
        new Exact("wOF2"u8.ToArray(), "font/woff2"),

        // Archives.
        new Exact([0x1F, 0x8B, 0x08], "application/x-gzip"),
        new Exact("PK\x03\x04"u8.ToArray(), "application/zip"),
        new Exact("Rar!\x1A\x07\x00"u8.ToArray(), "application/x-rar-compressed"),
        new Exact("Rar!\x1A\x07\x01\x00"u8.ToArray(), "application/x-rar-compressed"),
        new Exact([0x00, 0x61, 0x73, 0x6D], "application/wasm"),
    ];

    /// <summary>The Content-Type for <paramref name="data"/>; only its first <see cref="MaxLength"/> bytes count.</summary>
    public static string Sniff(ReadOnlySpan<byte> data)
    {
        if (data.Length > MaxLength)
        {
            data = data[..MaxLength];
        }
        int firstNonWhitespace = 0;
        while (firstNonWhitespace < data.Length && IsWhitespace(data[firstNonWhitespace]))
        {
            firstNonWhitespace++;
        }
        foreach (Signature signature in s_signatures)
        {
            if (signature.Matches(data, firstNonWhitespace))
            {
                return signature.ContentType;
            }
        }
        return ContainsBinaryData(data) ? Binary : PlainText;
    }

    private static IEnumerable<Signature> HtmlTags(params string[] tags) =>
        tags.Select(tag => new HtmlTag(System.Text.Encoding.ASCII.GetBytes(tag)));

    /// <summary>The standard's whitespace bytes: tab, line feed, form feed, carriage return, space.</summary>
    private static bool IsWhitespace(byte b) => b is (byte)'\t' or (byte)'\n' or 0x0C or (byte)'\r' or (byte)' ';

    /// <summary>The standard's "binary data bytes": control characters other than tab, LF, FF, CR and ESC.</summary>
    private static bool ContainsBinaryData(ReadOnlySpan<byte> data)
    {
        foreach (byte b in data)
        {
            if (b <= 0x08 || b == 0x0B || (b >= 0x0E && b <= 0x1A) || (b >= 0x1C && b <= 0x1F))
            {
                return true;
            }
        }
        return false;
    }

    private abstract record Signature(string ContentType)
    {
        public abstract bool Matches(ReadOnlySpan<byte> data, int firstNonWhitespace);
    }

    private sealed record Exact(byte[] Pattern, string ContentType) : Signature(ContentType)
    {
        public override bool Matches(ReadOnlySpan<byte> data, int firstNonWhitespace) => data.StartsWith(Pattern);
    }

    private sealed record Masked(byte[] Pattern, byte[]? Mask, string ContentType, bool SkipWhitespace = false) : Signature(ContentType)
    {
        public override bool Matches(ReadOnlySpan<byte> data, int firstNonWhitespace)
        {
            if (SkipWhitespace)
            {
                data = data[firstNonWhitespace..];
            }
            if (data.Length < Pattern.Length)
            {
                return false;
            }
            for (int i = 0; i < Pattern.Length; i++)
            {
                byte mask = Mask?[i] ?? 0xFF;
                if ((data[i] & mask) != Pattern[i])
                {
                    return false;
                }
            }
            return true;
        }
    }

    /// <summary>An HTML tag: after leading whitespace, case-insensitive, followed by a space or '&gt;'.</summary>
    private sealed record HtmlTag(byte[] Tag) : Signature(Html)
    {
        public override bool Matches(ReadOnlySpan<byte> data, int firstNonWhitespace)
        {
            data = data[firstNonWhitespace..];
            if (data.Length < Tag.Length + 1)
            {
                return false;
            }
            for (int i = 0; i < Tag.Length; i++)
            {
                byte b = data[i];
                if (Tag[i] is >= (byte)'A' and <= (byte)'Z')
                {
                    b &= 0xDF; // ASCII upper-case, so that <html> matches <HTML>.
                }
                if (b != Tag[i])
                {
                    return false;
                }
            }
            return data[Tag.Length] is (byte)' ' or (byte)'>';
        }
    }

    /// <summary>An ISO base media file whose "ftyp" box names an mp4 brand.</summary>
    private sealed record Mp4() : Signature("video/mp4")
    {
        private const int BrandsStart = 8;
        private const int MinorVersionOffset = 12;
        private const int FieldSize = 4;

        public override bool Matches(ReadOnlySpan<byte> data, int firstNonWhitespace)
        {
            if (data.Length < MinorVersionOffset)
            {
                return false;
            }
            uint boxSize = BinaryPrimitives.ReadUInt32BigEndian(data);
            if (data.Length < boxSize || boxSize % FieldSize != 0 || !data[4..8].SequenceEqual("ftyp"u8))
            {
                return false;
            }
            for (int start = BrandsStart; start < boxSize; start += FieldSize)
            {
                if (start == MinorVersionOffset)
                {
                    continue; // The minor version, not a brand.
                }
                if (data.Slice(start, 3).SequenceEqual("mp4"u8))
                {
                    return true;
                }
            }
            return false;
        }
    }
}
