namespace SpliceTransport.Transport;

/// <summary>
/// Connection ids in Kestrel's style: 13 base-32 characters from a counter seeded with the start time,
/// unique within the process and unlikely to repeat across restarts.
/// </summary>
internal static class ConnectionIds
{
    private const string Alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUV";
    private const int Length = 13;
    private const int BitsPerCharacter = 5;
    private const int CharacterMask = 31;

    private static long s_last = DateTime.UtcNow.Ticks;

    public static string Next() => string.Create(Length, Interlocked.Increment(ref s_last), static (span, id) =>
    {
        for (int i = Length - 1; i >= 0; i--)
        {
            span[i] = Alphabet[(int)(id & CharacterMask)];
            id >>= BitsPerCharacter;
        }
    });
}
