"""The default texts of the quantize stage: evaluation prose for decoders, sentences for encoders.

They are used when the user gives no --eval-file / --calibration file. Both were written for
edgelm (no licence question) to cover ordinary English of several registers: encyclopedic,
technical, narrative, conversational and instructional. The decoder text is long enough for a
stable perplexity on a small model (about 1,000 tokens); the sentences vary in length from a
few words to a long compound sentence, as real embedding inputs do.
"""

from __future__ import annotations

EVAL_TEXT = """\
The river begins as a thin stream high in the mountains, where snow melts slowly through the spring and early summer. \
By the time it reaches the valley it has gathered the water of a hundred smaller creeks, and it moves with a steady, \
patient strength. Farmers along its banks have depended on it for centuries. They learned which fields flood in wet \
years, which ones stay dry, and how to build low walls of stone that slow the water without stopping it.

In the town at the bend of the river, the market opens before sunrise. Bakers carry trays of bread from their ovens, \
and fishermen lay out the morning's catch on beds of ice. A woman who sells honey has kept bees for forty years; she \
says the taste of the honey changes with the flowers of each season, lighter in spring and darker in autumn. Children \
on their way to school stop to look at the baskets of apples and pears, and the older ones count the coins in their \
pockets before deciding what to buy.

Modern computers store information as long sequences of bits, each of which is either zero or one. A processor reads \
instructions from memory, performs arithmetic on small pieces of data, and writes the results back. Because memory is \
much slower than the processor, engineers add layers of smaller and faster caches between them. Programs that reuse \
the same data often run quickly, while programs that jump around large tables spend most of their time waiting. For \
this reason, the speed of many applications depends less on the number of calculations they perform than on how much \
data they must move.

Language models predict the next word in a text from the words that came before it. During training, a model reads \
billions of sentences and adjusts its parameters so that its predictions become more accurate. A small model can run \
on an ordinary laptop or even a phone, although it knows less than a large one and makes more mistakes. Reducing the \
precision of the numbers inside a model, a technique called quantization, makes it smaller and often faster, but it can \
also make the model's answers slightly worse, so every reduced model should be measured against the original.

"Could you tell me the way to the station?" the traveller asked. The shopkeeper put down the box he was carrying and \
pointed along the street. "Go straight past the church, then turn left at the fountain. It takes about ten minutes on \
foot. If you are in a hurry, the bus stops right outside the bakery, and it comes every quarter of an hour." The \
traveller thanked him, lifted his heavy bag onto his shoulder, and set off in the direction of the fountain.

To make a simple loaf of bread, mix five hundred grams of flour with a teaspoon of salt and a small packet of dried \
yeast. Add three hundred millilitres of warm water and stir until the dough comes together. Knead it on a floured table \
for about ten minutes, until it feels smooth and elastic. Leave it in a covered bowl in a warm place for an hour, or \
until it has doubled in size. Shape it into a loaf, let it rise again for half an hour, and bake it in a hot oven for \
thirty to thirty-five minutes. The bread is ready when it sounds hollow if you tap the bottom.

The history of navigation is a story of people learning to read the sky and the sea. Early sailors stayed within sight \
of land, watching for familiar hills and headlands. Later they measured the height of the sun at noon and the angle of \
the pole star at night to estimate how far north or south they had travelled. Finding longitude was much harder, \
because it required knowing the exact time at a distant reference point. The problem was finally solved in the \
eighteenth century by clocks precise enough to keep time on a rolling ship for many weeks.

Good sleep matters more than most people think. Adults who regularly sleep less than seven hours a night find it harder \
to concentrate, remember new information, and control their mood. Doctors recommend going to bed at the same time each \
evening, keeping the bedroom dark and cool, and avoiding screens for an hour before sleep. Coffee and tea in the late \
afternoon can also keep people awake long after they have forgotten drinking them.
"""

SENTENCES = (
    "The cat sleeps on the warm windowsill.",
    "A dog is running across the park with a ball.",
    "Stock markets fell sharply after the announcement.",
    "The central bank left interest rates unchanged this quarter.",
    "How do I reset my password if I lost access to my email?",
    "Please send me the invoice by Friday.",
    "The new phone has a brighter screen and a longer battery life.",
    "This restaurant serves the best noodles in town.",
    "The food was cold and the service was painfully slow.",
    "I absolutely loved the concert last night!",
    "The meeting has been moved to Thursday afternoon.",
    "Water boils at one hundred degrees Celsius at sea level.",
    "Photosynthesis converts sunlight, water and carbon dioxide into sugar and oxygen.",
    "The museum is closed on Mondays.",
    "She plays the violin in the city orchestra.",
    "Our flight was delayed by three hours because of fog.",
    "The recipe calls for two eggs and a cup of sugar.",
    "He fixed the bicycle chain with a pair of pliers.",
    "Quantized models trade a little accuracy for a lot of speed.",
    "The library offers free language classes for adults.",
    "Heavy rain is expected across the north of the country tomorrow.",
    "The software update fixes a bug that drained the battery.",
    "Children learn new words remarkably quickly.",
    "The train to the airport leaves every fifteen minutes.",
    "My grandmother grows tomatoes and beans in her garden.",
    "The defendant pleaded not guilty to all charges.",
    "A small earthquake shook the coastal town early this morning.",
    "The team won the championship after a dramatic penalty shootout.",
    "Regular exercise lowers the risk of heart disease.",
    "Can you recommend a good book about the history of Rome?",
    "The printer on the second floor is out of paper again.",
    "Solar panels on the roof now supply most of the building's electricity.",
    "The hotel room had a beautiful view of the mountains.",
    "Customers can return unused items within thirty days.",
    "The professor explained the theorem with a simple drawing.",
    "Traffic on the bridge was blocked for two hours after the accident.",
    "The startup raised ten million dollars in its first funding round.",
    "Fresh bread smells wonderful in the morning.",
    "The vaccine must be stored at a low temperature.",
    "Edge devices run language models without a connection to the cloud.",
    "It was a quiet evening, and the streets were nearly empty.",
    "The contract will be renewed automatically unless either party objects in writing.",
    "Birds migrate south when the days grow shorter.",
    "Turn off the lights when you leave the room.",
    "The painting was sold at auction for a record price.",
    "He apologised for the misunderstanding and offered to pay for the damage.",
    "The river flooded the fields after a week of storms.",
    "Our support team answers questions in English, French and Spanish.",
    "The kids built a sandcastle on the beach.",
    "A balanced diet includes fruit, vegetables, grains and protein.",
    "The password must contain at least twelve characters.",
    "The concert hall was full, and the audience stood to applaud at the end.",
    "Scientists discovered a new species of frog in the rainforest.",
    "The package arrived damaged, so I asked for a replacement.",
    "The election results will be announced tomorrow evening.",
    "He spent the weekend painting the fence white.",
    "Memory bandwidth often limits how fast a model can generate text.",
    "The old lighthouse still guides ships along the rocky coast.",
    "Our neighbours adopted a kitten from the animal shelter.",
    "The app crashes whenever I try to upload a photo.",
    "Snow covered the village overnight, and schools were closed.",
    "The committee approved the budget by a narrow majority.",
    "Learning to cook is easier than most people expect.",
    "The ancient city was buried under volcanic ash for nearly two thousand years before archaeologists uncovered it.",
)
