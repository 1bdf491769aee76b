namespace SpliceTransport.Tests.Infrastructure;

/// <summary>
/// A read-only, non-seekable stream of <c>length</c> pseudo-random bytes that hashes what it hands out: a request
/// body of any size with its sha256, never held in memory.
/// </summary>
internal sealed class GeneratedBody(long length, int seed) : Stream
{
    private readonly Random _random = new(seed);
    private readonly System.Security.Cryptography.IncrementalHash _hash = System.Security.Cryptography.IncrementalHash.CreateHash(System.Security.Cryptography.HashAlgorithmName.SHA256);
    private long _remaining = length;
    private string? _sha256;

    /// <summary>The hash of every byte handed out; known once the stream has been read to its end.</summary>
    public string Sha256() => _sha256 ?? throw new InvalidOperationException($"{_remaining} bytes were not read.");

    public override int Read(Span<byte> buffer)
    {
        int n = (int)Math.Min(buffer.Length, _remaining);
        _random.NextBytes(buffer[..n]);
        _hash.AppendData(buffer[..n]);
        _remaining -= n;
        if (_remaining == 0 && _sha256 is null)
        {
            _sha256 = Convert.ToHexString(_hash.GetHashAndReset());
        }
        return n;
    }

    public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));
    public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) => new(Read(buffer.Span));
    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) => Task.FromResult(Read(buffer, offset, count));
    public override bool CanRead => true;
    public override bool CanSeek => false;
    public override bool CanWrite => false;
    public override long Length => throw new NotSupportedException();
    public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
    public override void Flush() { }
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();
    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();

    protected override void Dispose(bool disposing)
    {
        _hash.Dispose();
        base.Dispose(disposing);
    }
}
