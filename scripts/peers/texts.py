"""The fixed English text and the exact token ids every engine gets.

Ids come from the edgelm bundle's tokenizer.json (the `tokenizers` package) with
add_special_tokens=False, so no engine adds a BOS of its own (llama.cpp's GGUF says
add_bos_token = False; the others take ids as given). Prompts of exactly the needed lengths
are cut from the ids of PROSE below (written for this benchmark; plain, public-domain-style
English). Perplexity uses the first PPL_TOKENS ids of PROSE, or of --text FILE.
"""

from __future__ import annotations

from pathlib import Path

SINGLE_PROMPT, SINGLE_NEW = 25, 128
LONG_PROMPT, LONG_NEW = 500, 16
DEEP_PROMPT, DEEP_NEW = 1976, 64
BATCH_PROMPTS, BATCH_NEW = (20, 26, 31, 37, 42, 48, 54, 60), 64
BATCH_STRIDE = 180  # row k starts at id k * BATCH_STRIDE: eight different passages
PPL_TOKENS = 1024

PROSE = """\
The old lighthouse at the mouth of the harbour had not shown a light for many years, yet the \
people of the town still spoke of it as if it guarded them. Children were told that the keeper \
had climbed its hundred and twelve steps every evening of his life, and that on the night of the \
great storm he had kept the lamp burning with his own coat when the oil ran out. Nobody could say \
whether the story was true. The keeper's cottage stood empty at the foot of the tower, its windows \
boarded against the wind, and the gulls had made their nests along the gutters.

In the spring of that year a young woman named Margaret Hale came to the town with a trunk of \
books and a letter from the harbour board. She had been sent to survey the coast, to measure the \
depth of the channel and to record the places where the sand had shifted since the last charts \
were drawn. The fishermen watched her with polite suspicion. She rose before them, rowed out alone \
in a borrowed boat, and came back at noon with her sleeves wet to the elbow and her notebook full \
of figures. In the afternoons she sat by the window of the inn and copied her soundings onto large \
sheets of paper, which she pinned to the wall with the landlord's permission.

The work was slow. A channel is not a fixed thing but a conversation between the river and the \
sea, and each tide says something new. Margaret learned that the sand bar moved north in winter and \
south in summer, that the deepest water lay closer to the eastern rocks than any chart admitted, \
and that the old men of the harbour knew all of this without ever having written it down. She began \
to ask them questions, at first about the currents and later about everything else: the names of \
the boats, the years of bad catches, the families who had left for the cities and the few who had \
come back.

One evening, when the light was failing, she walked out along the breakwater to the lighthouse. \
The door at the bottom of the tower was locked, but the lock was rusted through and gave way when \
she pushed it. Inside, the air smelled of salt and old paint. A spiral of iron steps rose into the \
darkness. She counted them as she climbed, as the children of the town had been taught to count \
them, and there were indeed one hundred and twelve. At the top, under a dome of cracked glass, the \
great lens still sat in its brass cradle, dull with dust but whole.

She returned the next morning with a cloth, a lamp and a ladder, and spent the day cleaning the \
lens. It was made of many rings of glass, each one cut at a slightly different angle, so that the \
light of a single flame could be gathered and thrown far out over the water. She had read about \
such lenses in her books, but she had never stood inside one. When the sun came through the \
western windows the whole room filled with bands of colour, and she understood for the first time \
why sailors had trusted these towers with their lives.

News travels quickly in a small town. By the end of the week the landlord had asked her whether \
she meant to light the lamp again, the schoolmaster had brought his pupils to see the lens, and \
the harbour board had sent a second letter reminding her that her task was to survey the channel \
and nothing more. Margaret answered the letter politely and went on with her soundings. But in the \
evenings, when the work was done, she climbed the tower and sat beside the lens, writing in her \
notebook until it was too dark to see.

What she wrote there was not a survey. It was a record of the harbour as the people told it to \
her: the storm that had taken four boats in a single night, the winter when the river froze so \
hard that carts crossed it, the summer of the great shoal of herring when every house in the town \
smelled of smoke for a month. She wrote down the names of the keepers, as far back as anyone could \
remember them, and the names of the ships that had been saved and the ships that had been lost. \
She found that the story of the keeper and his coat was told in three different ways, and she \
wrote down all three.

A survey, she decided, tells you where the water is deep. It does not tell you why a town is \
built where it is, or why its people stay when the fish grow scarce and the young leave for work \
elsewhere. Those things are carried in stories, and stories, like channels, shift with every \
telling. The charts she was paid to make would be out of date in ten years. The notebook, she \
suspected, would be read for much longer, if anyone thought to keep it.

In the autumn the harbour board sent an inspector to see what had become of their surveyor. He \
was a careful man with a grey beard and a habit of tapping his pencil against his teeth. He spent \
two days with her charts and declared them the most accurate he had seen of that coast. Then he \
asked to see the lighthouse. Margaret took him up the hundred and twelve steps, and he stood for a \
long time in front of the lens without speaking. At last he said that the board had considered \
lighting the tower again but had judged it too costly, since the channel was now marked by buoys \
and the big ships no longer came that way.

Margaret showed him her soundings. The channel, she explained, had moved. The buoys had been \
placed according to the old charts, and two of them now stood in water so shallow that a loaded \
boat could ground there at low tide. The fishermen knew this and steered around them, but a \
stranger would not. A light on the tower, shining across the true channel, would show the safe \
passage to anyone who came in at night. The inspector listened, tapped his pencil, and wrote a \
long note in his own book.

The lamp was lit again on the first evening of the new year. Half the town came out along the \
breakwater to watch. The new keeper was a fisherman's son who had helped Margaret carry her ladder \
and her cloths up the tower all summer, and who had learned from her how the lens turned and how \
the clockwork that drove it was wound. When the flame caught and the great rings of glass began to \
turn, a beam of light swept out across the harbour, over the rocks, over the sand bar and the \
misplaced buoys, and far out to sea, where the evening boats were coming home.

Margaret left the town in the spring. Her charts went to the harbour board and were printed, with \
her name in small letters in one corner. Her notebook stayed behind. She gave it to the \
schoolmaster, who read parts of it aloud to his pupils and then placed it on a shelf in the \
schoolroom, where it remained for many years. Children who had never heard of the survey knew the \
three versions of the keeper's story by heart, and argued about which one was true.

Long afterwards, when the lighthouse was finally replaced by an automatic beacon on a steel \
mast, the town held a meeting to decide what to do with the old tower. Some wanted it pulled down, \
since it cost money to repair and served no purpose. Others wanted it kept as it was. In the end \
it was the schoolmaster's granddaughter, by then a teacher herself, who stood up with the \
notebook in her hand and read from it: the storm, the frozen river, the summer of the herring, the \
names of the keepers and the ships. When she had finished nobody spoke of pulling the tower down.

It still stands at the mouth of the harbour. The lens has been taken to a museum in the city, and \
the room at the top of the tower is empty except for a bench and a small brass plate. Visitors who \
climb the hundred and twelve steps can sit on the bench and look out over the water, where the \
channel has moved again, as channels do. The plate says only that a surveyor once worked in this \
room, and that she measured the depth of the harbour and the memory of the town with equal care.

There is a lesson in this for anyone who builds things meant to last. Measurements grow old, \
and the ground beneath them moves; what endures is the habit of looking again, and of writing \
down honestly what one finds. A good chart is not the one that is never wrong, but the one that \
says clearly when and how it was made, so that those who come later can tell how far to trust it \
and where to look for the changes. The same is true of a good account of anything: of a harbour, \
of a town, of a machine, or of a life.

The fishermen of the town, who had watched the surveyor with such suspicion when she first \
arrived, came to speak of her with a kind of proprietary pride. She was theirs, they said, because \
she had listened to them. Visitors who asked about the lighthouse were told the story of the \
keeper and his coat, and then, almost always, the story of the young woman who had counted the \
steps and cleaned the lens and shown the harbour board where the channel really ran. Like the \
older story, it changed a little with each telling. Some said she had rowed out in a storm to \
take her soundings; others that she had argued with the inspector for a whole night before he \
agreed to light the lamp. None of it was quite true, and all of it was true enough.
\n\
Years later a historian from the university came looking for the notebook. She had found \
Margaret's name on the old charts and wondered what kind of surveyor signs her work so modestly. \
The schoolroom shelf was empty by then, but the teacher's family had kept the notebook in a tin \
box, wrapped in oilcloth against the damp. The historian read it in a single afternoon at the \
kitchen table, copying passages by hand, and asked whether she might take it to the city to be \
photographed. The family agreed on one condition: that it be brought back. It was, a month later, \
together with a printed copy for the school and a letter of thanks. The historian's book about the \
coast was published the following winter. It has a chapter on the lighthouse, and the chapter ends \
with the three versions of the keeper's story, set side by side, without any attempt to decide \
between them.
"""


def prose_ids(tokenizer_file: Path, text: str = PROSE) -> list[int]:
    """Ids of TEXT with the bundle's tokenizer, no special tokens added."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer.encode(text, add_special_tokens=False).ids


def decode(tokenizer_file: Path, ids: list[int]) -> str:
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(tokenizer_file)).decode(ids)


def scenario_rows(ids: list[int], ppl_ids: list[int]) -> dict[str, tuple[list[list[int]], int]]:
    """scenario -> (prompt rows, new tokens): every prompt an exact slice of the prose ids."""
    needed = max(DEEP_PROMPT, (len(BATCH_PROMPTS) - 1) * BATCH_STRIDE + max(BATCH_PROMPTS))
    if len(ids) < needed:
        raise SystemExit(f"error: the built-in text gives {len(ids)} tokens, {needed} are needed")
    if len(ppl_ids) < 128:
        raise SystemExit(f"error: the perplexity text gives {len(ppl_ids)} tokens; give at least 128")
    batch = [ids[k * BATCH_STRIDE: k * BATCH_STRIDE + length] for k, length in enumerate(BATCH_PROMPTS)]
    return {
        "single": ([ids[:SINGLE_PROMPT]], SINGLE_NEW),
        "long": ([ids[:LONG_PROMPT]], LONG_NEW),
        "deep": ([ids[:DEEP_PROMPT]], DEEP_NEW),
        "batch": (batch, BATCH_NEW),
        "ppl": ([ppl_ids[:PPL_TOKENS]], 0),
    }
