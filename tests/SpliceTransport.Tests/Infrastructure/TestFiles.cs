using System.Security.Cryptography;

namespace SpliceTransport.Tests.Infrastructure;

/// <summary>A temporary folder of files with random bytes, deleted on dispose.</summary>
public sealed class TestFiles : IDisposable
{
    public TestFiles()
    {
        Root = Path.Combine(Path.GetTempPath(), "splice-tests-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(Root);
    }

    public string Root { get; }

    /// <summary>Creates <paramref name="name"/> with <paramref name="size"/> random bytes; returns its full path.</summary>
    public string Create(string name, long size)
    {
        string path = Path.Combine(Root, name);
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        using var file = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None, bufferSize: 0);
        byte[] chunk = new byte[1024 * 1024];
        for (long written = 0; written < size;)
        {
            int n = (int)Math.Min(chunk.Length, size - written);
            RandomNumberGenerator.Fill(chunk.AsSpan(0, n));
            file.Write(chunk, 0, n);
            written += n;
        }
        return path;
    }

    public void Dispose()
    {
        try
        {
            Directory.Delete(Root, recursive: true);
        }
        catch (IOException)
        {
        }
    }

    public static string Sha256(string path, long offset = 0, long? count = null)
    {
        using var file = File.OpenRead(path);
        file.Position = offset;
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        byte[] buffer = new byte[1024 * 1024];
        long remaining = count ?? file.Length - offset;
        while (remaining > 0)
        {
            int n = file.Read(buffer, 0, (int)Math.Min(buffer.Length, remaining));
            if (n == 0)
            {
                break;
            }
            hash.AppendData(buffer, 0, n);
            remaining -= n;
        }
        return Convert.ToHexString(hash.GetHashAndReset());
    }

    public static string Sha256(ReadOnlySpan<byte> data) => Convert.ToHexString(SHA256.HashData(data));

    public static async Task<string> Sha256Async(Stream stream)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        byte[] buffer = new byte[256 * 1024];
        int n;
        while ((n = await stream.ReadAsync(buffer)) > 0)
        {
            hash.AppendData(buffer, 0, n);
        }
        return Convert.ToHexString(hash.GetHashAndReset());
    }
}
